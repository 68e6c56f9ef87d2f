"""textrnn.training: learning, the schedule, determinism, resuming, checkpoints."""

from __future__ import annotations

import dataclasses
import itertools
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from textrnn import training
from textrnn.config import TrainParams
from textrnn.data import EncodedSplit, write_encoded_split
from textrnn.model import ModelConfig
from textrnn.training import fit, load_checkpoint, save_checkpoint, warmup_decay

CFG = ModelConfig(vocab_size=12, num_classes=2, embedding_dim=8, hidden_size=8, embedding_dropout=0.1,
                  dropout=0.1)
PARAMS = TrainParams(epochs=2, batch_size=4, lr=0.01, patience=100, threads=1, seed=7, bucket_size=2,
                     device="cpu")


def toy_split(folder: Path, rows: int, seed: int = 0) -> EncodedSplit:
    """Class 0 uses tokens 2..5, class 1 tokens 6..9; lengths 3..8."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % 2
    lengths = rng.integers(3, 9, rows)
    ids = np.concatenate([rng.integers(2, 6, n) + 4 * label for n, label in zip(lengths, labels)])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    write_encoded_split(folder, [(ids, offsets, labels, 0)])
    return EncodedSplit.load(folder)


@pytest.fixture
def splits(tmp_path: Path) -> tuple[EncodedSplit, EncodedSplit]:
    return toy_split(tmp_path / "train", 16, seed=0), toy_split(tmp_path / "val", 8, seed=1)


def state_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, tensor in a.items():
        assert torch.equal(tensor, b[key]), key


def test_loss_falls_when_overfitting_16_examples(splits, tmp_path):
    train, _ = splits
    params = dataclasses.replace(PARAMS, epochs=25, lr=0.02, warmup_fraction=0.05)
    model, state = fit(CFG, train, train, params, tmp_path / "state.pt", "overfit")
    losses = [row["train_loss"] for row in state.history]
    assert len(losses) == 25
    assert losses[-1] < 0.5 * losses[0]
    assert state.best_f1 == 1.0  # it separates its own training set
    assert list(state.history[0]) == list(training.LOG_COLUMNS)
    logits = training.predict_logits(model, train, batch_size=16, device=torch.device("cpu"))
    assert (logits.argmax(1) == np.asarray(train.labels)).all()


def test_warmup_decay_rises_linearly_then_decays_to_zero():
    factor = warmup_decay(total_steps=100, warmup_fraction=0.1)
    warmup = [factor(s) for s in range(10)]
    assert warmup == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    decay = [factor(s) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    assert factor(100) == pytest.approx(0.0, abs=1e-12)
    assert factor(500) == pytest.approx(0.0, abs=1e-12)  # past the end it stays at zero


def test_warmup_decay_without_warmup_starts_at_the_peak():
    factor = warmup_decay(total_steps=10, warmup_fraction=0.0)
    assert factor(0) == 1.0
    assert factor(1) == pytest.approx(1.0)
    assert factor(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 9)))


def test_fit_twice_with_the_same_seed_gives_identical_weights(splits, tmp_path):
    train, val = splits
    first, _ = fit(CFG, train, val, PARAMS, tmp_path / "a.pt", "fp")
    second, _ = fit(CFG, train, val, PARAMS, tmp_path / "b.pt", "fp")
    assert_same_tensors(first.state_dict(), second.state_dict())
    assert_same_tensors(state_weights(tmp_path / "a.pt"), state_weights(tmp_path / "b.pt"))


def test_another_seed_gives_other_weights(splits, tmp_path):
    train, val = splits
    first, _ = fit(CFG, train, val, PARAMS, tmp_path / "a.pt", "fp")
    other, _ = fit(CFG, train, val, dataclasses.replace(PARAMS, seed=8), tmp_path / "b.pt", "fp")
    assert not torch.equal(first.embedding.weight, other.embedding.weight)


def test_resume_after_a_kill_gives_the_same_weights_as_a_straight_run(splits, tmp_path, monkeypatch):
    train, val = splits
    _, straight = fit(CFG, train, val, PARAMS, tmp_path / "straight.pt", "fp")

    # Kill the run right after the state of epoch 1 is on disk (the real save runs first).
    real_save = training.save_fit_state

    def save_then_die(path, fingerprint, state, *args):
        real_save(path, fingerprint, state, *args)
        if state.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_fit_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(CFG, train, val, PARAMS, tmp_path / "resumed.pt", "fp")
    monkeypatch.undo()
    assert torch.load(tmp_path / "resumed.pt", weights_only=True)["epoch"] == 1

    _, resumed = fit(CFG, train, val, PARAMS, tmp_path / "resumed.pt", "fp")
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    assert_same_tensors(state_weights(tmp_path / "straight.pt"), state_weights(tmp_path / "resumed.pt"))


def test_a_finished_state_with_the_same_fingerprint_is_not_trained_again(splits, tmp_path):
    train, val = splits
    fit(CFG, train, val, PARAMS, tmp_path / "state.pt", "fp")
    before = state_weights(tmp_path / "state.pt")
    _, state = fit(CFG, train, val, PARAMS, tmp_path / "state.pt", "fp")
    assert state.epoch == PARAMS.epochs
    assert_same_tensors(before, state_weights(tmp_path / "state.pt"))


def test_a_state_with_another_fingerprint_is_ignored(splits, tmp_path):
    train, val = splits
    fresh, _ = fit(CFG, train, val, PARAMS, tmp_path / "fresh.pt", "new")
    # A finished two-epoch run under another fingerprint: resuming would train nothing at all.
    fit(CFG, train, val, dataclasses.replace(PARAMS, seed=99), tmp_path / "old.pt", "old")
    model, state = fit(CFG, train, val, PARAMS, tmp_path / "old.pt", "new")
    assert [row["epoch"] for row in state.history] == [1, 2]
    assert_same_tensors(model.state_dict(), fresh.state_dict())
    stored = torch.load(tmp_path / "old.pt", weights_only=True)["fingerprint"]
    assert stored == torch.load(tmp_path / "fresh.pt", weights_only=True)["fingerprint"]


def test_a_corrupt_state_file_is_ignored(splits, tmp_path):
    train, val = splits
    (tmp_path / "state.pt").write_bytes(b"not a torch file")
    _, state = fit(CFG, train, val, PARAMS, tmp_path / "state.pt", "fp")
    assert [row["epoch"] for row in state.history] == [1, 2]


@pytest.fixture
def checkpoint(splits, tmp_path) -> tuple[Path, torch.nn.Module]:
    train, val = splits
    model, _ = fit(CFG, train, val, dataclasses.replace(PARAMS, epochs=1), tmp_path / "state.pt", "fp")
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, "digest-1", ["neg", "pos"], {"train": {"epochs": 1}}, {"epoch": 1})
    return path, model


def test_checkpoint_round_trip(checkpoint):
    path, model = checkpoint
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert set(payload) >= {"state_dict", "config", "vocab_digest", "labels", "params", "best"}
    assert payload["config"] == CFG.to_dict()
    assert payload["labels"] == ["neg", "pos"]
    loaded, loaded_payload = load_checkpoint(path, expected_vocab_digest="digest-1")
    assert loaded.training is False
    assert loaded.cfg == CFG
    assert loaded_payload["params"] == {"train": {"epochs": 1}}
    assert_same_tensors(loaded.state_dict(), model.state_dict())


def test_checkpoint_with_flipped_bytes_raises_naming_the_file(checkpoint, tmp_path):
    path, _ = checkpoint
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 22, len(data)):  # the zip's end-of-central-directory record
        data[i] ^= 0xFF
    broken = tmp_path / "broken.pt"
    broken.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="broken.pt") as info:
        load_checkpoint(broken)
    assert "corrupt" in str(info.value)


def test_flipped_bytes_inside_tensor_data_are_detected(checkpoint, tmp_path):
    path, _ = checkpoint
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:  # the largest member holds tensor bytes
        member = max(archive.infolist(), key=lambda info: info.compress_size)
        start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    for i in range(start + member.compress_size // 2, start + member.compress_size // 2 + 8):
        data[i] ^= 0xFF
    broken = tmp_path / "flipped.pt"
    broken.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="flipped.pt.*checksum"):
        load_checkpoint(broken)


def test_truncated_checkpoint_raises_naming_the_file(checkpoint, tmp_path):
    path, _ = checkpoint
    half = tmp_path / "half.pt"
    half.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="half.pt"):
        load_checkpoint(half)


def test_missing_checkpoint_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_checkpoint_of_another_vocabulary_is_refused(checkpoint):
    path, _ = checkpoint
    with pytest.raises(ValueError, match="another vocabulary"):
        load_checkpoint(path, expected_vocab_digest="digest-2")


def test_asking_for_cuda_without_a_gpu_is_a_clear_error_or_works_with_one():
    if torch.cuda.is_available():
        assert training.pick_device("cuda").type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="train.device = 'cuda'"):
            training.pick_device("cuda")
    assert training.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device here (CPU-only torch build); this runs on a machine with a GPU")
def test_the_cuda_path_trains_and_matches_cpu_predictions_closely(splits, tmp_path):
    train, val = splits
    cpu_model, _ = fit(CFG, train, val, dataclasses.replace(PARAMS, device="cpu"), tmp_path / "cpu.pt", "fp")
    gpu_model, state = fit(CFG, train, val, dataclasses.replace(PARAMS, device="cuda"), tmp_path / "gpu.pt", "fp")
    assert next(gpu_model.parameters()).device.type == "cuda"
    assert state.epoch == PARAMS.epochs
    cpu_logits = training.predict_logits(cpu_model, val, 8, torch.device("cpu"))
    gpu_logits = training.predict_logits(gpu_model, val, 8, torch.device("cuda"))
    assert np.abs(cpu_logits - gpu_logits).max() < 0.05


def test_a_token_budget_stops_mid_epoch_where_the_schedule_ends(splits, tmp_path):
    train, val = splits
    epoch_tokens = int(train.lengths.sum())
    params = dataclasses.replace(PARAMS, epochs=5, max_tokens=int(epoch_tokens * 1.5))
    _, state = fit(CFG, train, val, params, tmp_path / "state.pt", "fp")
    end = state.position
    assert params.max_tokens <= end.tokens < params.max_tokens + 8 * PARAMS.batch_size  # one batch past at most
    assert (end.epoch, end.batch) == (1, 2)  # half of the 4 batches of epoch 2
    assert [row["epoch"] for row in state.history] == [1, 1.5]  # each epoch's end, and the budget's
    assert [row["tokens"] for row in state.history] == [epoch_tokens, end.tokens]
    assert state.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine ends with the budget


def test_a_step_budget_stops_after_that_many_steps(splits, tmp_path):
    train, val = splits
    _, state = fit(CFG, train, val, dataclasses.replace(PARAMS, max_steps=3), tmp_path / "state.pt", "fp")
    assert (state.position.steps, state.position.epoch, state.position.batch) == (3, 0, 3)
    assert len(state.history) == 1 and state.history[0]["epoch"] == 0.75


def test_patience_counts_validations_every_n_tokens(splits, tmp_path):
    train, val = splits
    params = dataclasses.replace(PARAMS, epochs=30, lr=1e-6, patience=2, eval_every_tokens=10)
    _, state = fit(CFG, train, val, params, tmp_path / "state.pt", "fp")
    assert len(state.history) == state.best_step + params.patience  # stopped after 2 stale validations
    assert state.position.epoch < params.epochs


def test_resume_mid_epoch_gives_the_same_weights_as_a_straight_run(splits, tmp_path, monkeypatch):
    train, val = splits
    epoch_tokens = int(train.lengths.sum())
    params = dataclasses.replace(PARAMS, epochs=3, eval_every_tokens=int(epoch_tokens * 0.4),
                                 max_tokens=int(epoch_tokens * 2.6))
    _, straight = fit(CFG, train, val, params, tmp_path / "straight.pt", "fp")
    assert any(row["epoch"] != int(row["epoch"]) for row in straight.history)  # it validates mid-epoch

    # Kill the run right after a state saved in the middle of epoch 2 is on disk (the real save runs first).
    real_save = training.save_fit_state

    def save_then_die(path, fingerprint, state, *args):
        real_save(path, fingerprint, state, *args)
        if state.position.epoch == 1 and state.position.batch > 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_fit_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(CFG, train, val, params, tmp_path / "resumed.pt", "fp")
    monkeypatch.undo()
    saved = torch.load(tmp_path / "resumed.pt", weights_only=True)["position"]
    assert saved["epoch"] == 1 and saved["batch"] > 0

    _, resumed = fit(CFG, train, val, params, tmp_path / "resumed.pt", "fp")
    untimed = [{k: v for k, v in row.items() if k not in ("seconds", "tokens_per_s")} for row in resumed.history]
    assert untimed == [{k: v for k, v in row.items() if k not in ("seconds", "tokens_per_s")}
                       for row in straight.history]
    assert resumed.position == straight.position
    assert_same_tensors(state_weights(tmp_path / "straight.pt"), state_weights(tmp_path / "resumed.pt"))


def test_a_state_saved_by_another_number_of_processes_is_refused_naming_the_file(splits, tmp_path):
    train, val = splits
    params = dataclasses.replace(PARAMS, max_steps=2)
    fit(CFG, train, val, params, tmp_path / "state.pt", "fp")
    payload = torch.load(tmp_path / "state.pt", weights_only=True)
    payload["rng"] = {name: torch.cat([state, state]) for name, state in payload["rng"].items()}  # as 2 ranks
    torch.save(payload, tmp_path / "state.pt")
    with pytest.raises(ValueError, match=r"state\.pt: training state saved by 2 processes, this run has 1"):
        fit(CFG, train, val, params, tmp_path / "state.pt", "fp")
