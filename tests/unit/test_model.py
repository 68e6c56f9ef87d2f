"""textrnn.model: shapes for every configuration, padding invariance, reversal within length."""

from __future__ import annotations

import itertools

import pytest
import torch

from textrnn.model import ModelConfig, RNNClassifier, hashed_ngrams, reverse_within_length

VOCAB, CLASSES, HIDDEN = 30, 3, 8
CONFIGS = list(itertools.product(["lstm", "gru"], ["last", "mean", "max", "attention", "maxmean"],
                                 [True, False], [1, 2]))
IDS = [f"{cell}-{pool}-{'bi' if bi else 'uni'}-{layers}L" for cell, pool, bi, layers in CONFIGS]


def make_model(cell: str, pooling: str, bidirectional: bool, num_layers: int) -> RNNClassifier:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, num_classes=CLASSES, cell=cell, embedding_dim=8, hidden_size=HIDDEN,
                      num_layers=num_layers, bidirectional=bidirectional, pooling=pooling)
    return RNNClassifier(cfg).eval()


@pytest.mark.parametrize(("cell", "pooling", "bidirectional", "num_layers"), CONFIGS, ids=IDS)
def test_logits_shape_for_every_configuration(cell, pooling, bidirectional, num_layers):
    model = make_model(cell, pooling, bidirectional, num_layers)
    ids = torch.randint(1, VOCAB, (4, 7))
    lengths = torch.tensor([7, 1, 3, 5])
    ids[torch.arange(7).unsqueeze(0) >= lengths.unsqueeze(1)] = 0  # right-padded
    with torch.no_grad():
        logits = model(ids, lengths)
    assert logits.shape == (4, CLASSES)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("cell", "pooling", "bidirectional", "num_layers"), CONFIGS, ids=IDS)
def test_padding_never_changes_the_logits(cell, pooling, bidirectional, num_layers):
    model = make_model(cell, pooling, bidirectional, num_layers)
    short = torch.tensor([[5, 9, 2]])
    long = torch.randint(1, VOCAB, (1, 60))
    batch = torch.zeros(2, 60, dtype=torch.long)
    batch[0, :3] = short[0]
    batch[1] = long[0]
    with torch.no_grad():
        alone = model(short, torch.tensor([3]))
        together = model(batch, torch.tensor([3, 60]))
        long_alone = model(long, torch.tensor([60]))
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(together[1], long_alone[0], atol=1e-5, rtol=0)


def test_padding_invariance_is_not_trivial():
    """The invariance above means something: a real token in place of a pad does change the logits."""
    model = make_model("lstm", "maxmean", True, 1)
    with torch.no_grad():
        three = model(torch.tensor([[5, 9, 2, 7]]), torch.tensor([3]))
        four = model(torch.tensor([[5, 9, 2, 7]]), torch.tensor([4]))
    assert not torch.allclose(three, four, atol=1e-4)


def test_reverse_within_length_reverses_only_the_real_steps():
    x = torch.arange(10, dtype=torch.float32).view(2, 5, 1).repeat(1, 1, 2)  # [2, 5, 2]
    out = reverse_within_length(x, torch.tensor([3, 5]))
    assert out[0, :, 0].tolist() == [2, 1, 0, 3, 4]
    assert out[1, :, 0].tolist() == [9, 8, 7, 6, 5]
    assert torch.equal(out[..., 0], out[..., 1])  # every feature moves with its step


def test_reverse_within_length_is_its_own_inverse():
    x = torch.randn(3, 6, 4)
    lengths = torch.tensor([1, 4, 6])
    out = reverse_within_length(x, lengths)
    assert torch.equal(out[0], x[0])  # length 1: nothing moves
    assert torch.equal(reverse_within_length(out, lengths), x)


def test_config_from_params_and_back():
    from textrnn.config import ModelParams

    cfg = ModelConfig.from_params(ModelParams(cell="gru", hidden_size=8), vocab_size=11, num_classes=2)
    assert cfg.to_dict()["cell"] == "gru"
    assert ModelConfig(**cfg.to_dict()) == cfg


def make_ngram_model(max_order: int = 3) -> RNNClassifier:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, num_classes=CLASSES, embedding_dim=8, hidden_size=HIDDEN,
                      ngram_buckets=97, ngram_max=max_order, ngram_dim=4)
    model = RNNClassifier(cfg).eval()
    torch.nn.init.normal_(model.ngrams.weight)  # trained tables are not zero; the start is
    return model


def test_hashed_ngrams_cover_exactly_the_ngrams_inside_each_row():
    ids = torch.tensor([[4, 5, 6, 7], [4, 5, 0, 0]])
    grams, valid = hashed_ngrams(ids, torch.tensor([4, 2]), max_order=3, buckets=1 << 20)
    assert grams.shape == valid.shape == (2, 8)  # (orders 2 and 3) x 4 starts
    assert valid.sum(1).tolist() == [3 + 2, 1]  # "45 56 67" + "456 567"; "45"
    assert grams[0, 0] == grams[1, 0]  # the same bigram, the same bucket
    assert len(set(grams[0][valid[0]].tolist())) == 5  # distinct n-grams, distinct buckets here
    assert (grams >= 0).all() and (grams < 1 << 20).all()


@pytest.mark.parametrize("max_order", [2, 4])
def test_ngram_bag_keeps_padding_invariance_also_for_rows_shorter_than_an_order(max_order):
    model = make_ngram_model(max_order)
    with torch.no_grad():
        for row in ([7], [7, 3], [7, 3, 9, 2, 5]):
            alone = model(torch.tensor([row]), torch.tensor([len(row)]))
            padded = torch.zeros(1, 12, dtype=torch.long)
            padded[0, :len(row)] = torch.tensor(row)
            torch.testing.assert_close(model(padded, torch.tensor([len(row)])), alone, atol=1e-5, rtol=0)


def test_ngram_bag_reads_word_order_the_unigrams_miss():
    """Same tokens, other order: only the bigrams differ, and with the RNN's output held equal they
    still change the logits, so the bag is wired into the head."""
    model = make_ngram_model(2)
    a, b = torch.tensor([[3, 4, 3, 5]]), torch.tensor([[4, 3, 5, 3]])
    with torch.no_grad():
        bag_a = model._ngram_bag(a, torch.tensor([4]))
        bag_b = model._ngram_bag(b, torch.tensor([4]))
    assert bag_a.shape == (1, 4)
    assert not torch.allclose(bag_a, bag_b)
    assert model.head.in_features == 2 * 2 * HIDDEN + 4
