"""textrnn.vocab: token counting, vocabulary selection, encoding and the saved vocabulary."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textrnn.normalisation import Normalisation
from textrnn.tokenisation import WORD_CODE_BASE, TokenCodes, load_token_codes, save_token_codes, token_codes, tokenise
from textrnn.vocab import (
    PAD,
    PAD_ID,
    UNK,
    UNK_ID,
    TokenCounter,
    Vocabulary,
    encode,
    encode_raw,
    encode_texts,
    encode_tokens,
    select_tokens,
)


def counts(pairs: dict[str, int]) -> pa.Table:
    return pa.table({"token": list(pairs), "count": pa.array(list(pairs.values()), pa.int64())})


def vocab_of(tokens: list[str], max_len: int = 10) -> Vocabulary:
    return Vocabulary(tokens=(PAD, UNK, *tokens), normalisation=Normalisation(), jieba=False, max_len=max_len)


def rows(ids: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    return [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]


@pytest.mark.parametrize("use_jieba", [False, True])
def test_token_counter_sums_over_batches(use_jieba):
    counter = TokenCounter(compact_every=2)
    for texts in (["ab b ab", "c", None], ["ab c", ""], ["好 好"]):
        counter.add(token_codes(pa.array(texts, pa.string()), use_jieba=use_jieba))
    table = counter.table()
    got = dict(zip(table.column("token").to_pylist(), table.column("count").to_pylist(), strict=True))
    assert got == {"ab": 3, "b": 1, "c": 2, "好": 2}


def counted(counter: TokenCounter) -> dict[str, int]:
    table = counter.table()
    return dict(zip(table.column("token").to_pylist(), table.column("count").to_pylist(), strict=True))


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(st.lists(st.one_of(st.none(), st.text(alphabet="ab 好的!é\u3000x1\U0001f600", max_size=12)),
                                 max_size=8), max_size=3))
def test_counting_texts_as_they_are_cut_counts_the_tokens_of_tokenise(batches):
    # add_texts counts without a code per token; add counts token_codes: the same counts.
    direct, by_codes, by_tokenise = TokenCounter(compact_every=2), TokenCounter(compact_every=2), Counter()
    for texts in batches:
        array = pa.array(texts, pa.string())
        direct.add_texts(array)
        by_codes.add(token_codes(array))
        by_tokenise.update(token for row in tokenise(array).to_pylist() for token in row or [])
    assert counted(direct) == counted(by_codes) == dict(by_tokenise)



def test_counting_texts_counts_thousands_of_distinct_words_exactly():
    # The counting pass keeps the longer tokens in a hash table that grows as it meets new words.
    texts = [" ".join(f"w{i % 3000} é{i % 700}" for i in range(row, row + 50)) for row in range(0, 6000, 50)]
    counter = TokenCounter()
    counter.add_texts(pa.array(texts))
    expected = Counter(token for row in tokenise(pa.array(texts)).to_pylist() for token in row)
    assert counted(counter) == dict(expected) and len(expected) == 3000 + 700

@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), st.text(alphabet="ab 好的!é\u3000x1", max_size=12)), max_size=8))
def test_token_codes_are_the_tokens_of_tokenise(texts):
    array = pa.array(texts, pa.string())
    codes = token_codes(array)
    words = codes.words.to_pylist()
    decoded = [chr(c) if c < WORD_CODE_BASE else words[c - WORD_CODE_BASE] for c in codes.codes.tolist()]
    rows = [decoded[codes.row_offsets[i]:codes.row_offsets[i + 1]] for i in range(len(texts))]
    assert rows == [row or [] for row in tokenise(array).to_pylist()]


def decoded_rows(codes: TokenCodes) -> list[list[str]]:
    words = codes.words.to_pylist()
    decoded = [chr(c) if c < WORD_CODE_BASE else words[c - WORD_CODE_BASE] for c in codes.codes.tolist()]
    return [decoded[codes.row_offsets[i]:codes.row_offsets[i + 1]] for i in range(len(codes.row_offsets) - 1)]


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), st.text(alphabet="ab 好!é1", max_size=10)), max_size=12),
       use_jieba=st.booleans())
def test_token_codes_saved_and_loaded_are_the_tokens_of_all_rows(tmp_path_factory, texts, use_jieba):
    """What vocab's count step saves per shard is what encoding reads."""
    array = pa.array(texts, pa.string())
    folder = tmp_path_factory.mktemp("tokens") / "shard"
    save_token_codes(folder, token_codes(array, use_jieba=use_jieba))
    loaded = load_token_codes(folder)
    assert decoded_rows(loaded) == decoded_rows(token_codes(array, use_jieba=use_jieba))
    vocab = Vocabulary(tokens=(PAD, UNK, "ab", "好", "é"), normalisation=Normalisation(), jieba=use_jieba, max_len=3)
    for got, expected in zip(encode_tokens(loaded, vocab), encode(array, vocab), strict=True):
        assert got.tolist() == expected.tolist()


def test_empty_token_counter_gives_an_empty_table():
    table = TokenCounter().table()
    assert table.num_rows == 0 and table.column_names == ["token", "count"]


def test_select_tokens_orders_by_count_then_token_after_the_specials():
    chosen = select_tokens(counts({"b": 5, "a": 5, "z": 9, "c": 1}), min_freq=1, max_size=100)
    assert chosen == (PAD, UNK, "z", "a", "b", "c")
    assert chosen.index(PAD) == PAD_ID and chosen.index(UNK) == UNK_ID


def test_select_tokens_drops_tokens_below_min_freq():
    assert select_tokens(counts({"a": 3, "b": 2, "c": 1}), min_freq=2, max_size=100) == (PAD, UNK, "a", "b")


def test_select_tokens_max_size_counts_the_specials():
    chosen = select_tokens(counts({"a": 4, "b": 3, "c": 2, "d": 1}), min_freq=1, max_size=4)
    assert chosen == (PAD, UNK, "a", "b")


def test_select_tokens_never_repeats_the_specials_or_keeps_empty_tokens():
    chosen = select_tokens(counts({PAD: 50, UNK: 40, "": 30, "a": 1}), min_freq=1, max_size=100)
    assert chosen == (PAD, UNK, "a")


def test_encode_maps_known_tokens_and_unknown_to_unk():
    vocab = vocab_of(["good", "phone", "好"])
    ids, offsets = encode(pa.array(["good phone", "bad phone 好"]), vocab)
    assert ids.dtype == np.int32 and offsets.dtype == np.int64
    assert rows(ids, offsets) == [[2, 3], [UNK_ID, 3, 4]]


def test_encode_truncates_each_row_to_max_len():
    vocab = vocab_of(["a", "b"], max_len=3)
    ids, offsets = encode(pa.array(["a b a b a", "b", "a a a a"]), vocab)
    assert rows(ids, offsets) == [[2, 3, 2], [3], [2, 2, 2]]
    assert offsets.tolist() == [0, 3, 4, 7]


@pytest.mark.parametrize("max_len", [3, 10])
def test_encode_tokens_in_the_vocabularys_ids_dtype_gives_the_same_ids(max_len):
    vocab = vocab_of(["a", "b", "好", "good"], max_len=max_len)
    tokens = token_codes(pa.array(["a b a b a good", "好 c", ""]))
    wide, wide_offsets = encode_tokens(tokens, vocab)
    narrow, narrow_offsets = encode_tokens(tokens, vocab, vocab.ids_dtype)
    assert vocab.ids_dtype == np.uint16 and narrow.dtype == np.uint16
    assert narrow.tolist() == wide.tolist() and narrow_offsets.tolist() == wide_offsets.tolist()



_ALPHABET = "ab 好的!é\u3000x1\U0001f600\u200b"


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), st.text(alphabet=_ALPHABET, max_size=14)), max_size=10),
       words=st.lists(st.text(alphabet="abéx1", min_size=1, max_size=3), max_size=6, unique=True),
       max_len=st.integers(1, 6), start=st.integers(0, 2))
def test_encoding_in_one_pass_gives_the_ids_of_the_tokens_cut_first(texts, words, max_len, start):
    # encode_texts looks each token up as it cuts it; encode_tokens maps the codes of token_codes: the same
    # ids, offsets and <unk> count, for any text, vocabulary and cut, in either ids dtype.
    vocab = vocab_of(["好", "!", "\U0001f600", *words], max_len=max_len)
    array = pa.array(texts, pa.string()).slice(min(start, len(texts)))
    for dtype in (np.int32, np.uint16):
        ids, offsets, unknown = encode_texts(array, vocab, dtype)
        expected_ids, expected_offsets = encode_tokens(token_codes(array), vocab, dtype)
        assert ids.dtype == dtype and offsets.dtype == np.int64
        assert ids.tolist() == expected_ids.tolist() and offsets.tolist() == expected_offsets.tolist()
        assert unknown == int(np.count_nonzero(expected_ids == UNK_ID))


def test_encoding_in_one_pass_finds_every_word_of_a_large_vocabulary():
    # Thousands of words share the table's slots: each is found by its bytes, never a neighbour's id.
    words = [f"w{i}" for i in range(5000)] + [f"é{i}" for i in range(3000)]
    vocab = vocab_of(words, max_len=20_000)
    text = " ".join(words + ["w5000", "é", "x"])
    ids, offsets, unknown = encode_texts(pa.array([text]), vocab)
    assert ids.tolist() == [*range(2, 2 + len(words)), UNK_ID, UNK_ID, UNK_ID] and unknown == 3


def test_ids_dtype_is_uint16_up_to_65536_tokens_then_int32():
    assert vocab_of([f"w{i}" for i in range(65534)]).ids_dtype == np.uint16
    big = vocab_of([f"w{i}" for i in range(65535)])
    assert big.ids_dtype == np.int32
    with pytest.raises(ValueError, match="65537 tokens"):
        encode_tokens(token_codes(pa.array(["w1"])), big, np.uint16)


def test_encode_empty_text_gives_an_empty_row():
    vocab = vocab_of(["a", "!"])
    ids, offsets = encode(pa.array(["", "a !", ""]), vocab)
    assert rows(ids, offsets) == [[], [2, 3], []]


def test_encode_of_a_sliced_array_starts_at_zero():
    vocab = vocab_of(["a", "b"])
    ids, offsets = encode(pa.array(["b", "a b", "a"]).slice(1), vocab)
    assert offsets[0] == 0 and rows(ids, offsets) == [[2, 3], [2]]


def test_encode_raw_applies_the_saved_normalisation():
    vocab = vocab_of(["great", "phone", "xxnum"])
    ids, offsets = encode_raw(["<b>GREAT</b> Ｐｈｏｎｅ 42"], vocab)
    assert rows(ids, offsets) == [[2, 3, 4]]


def test_vocabulary_json_round_trip_keeps_everything():
    norm = Normalisation(lowercase=False, max_chars=50)
    vocab = Vocabulary(tokens=(PAD, UNK, "好", "a"), normalisation=norm, jieba=True, max_len=7)
    payload = json.loads(json.dumps(vocab.to_json()))
    again = Vocabulary.from_json(payload)
    assert again == vocab
    assert again.digest == vocab.digest
    assert payload["specials"] == {PAD: 0, UNK: 1}


def test_vocabulary_digest_changes_with_tokens_and_tokeniser_settings():
    base = vocab_of(["a", "b"])
    assert vocab_of(["a", "b"]).digest == base.digest
    assert vocab_of(["b", "a"]).digest != base.digest
    assert vocab_of(["a", "b"], max_len=11).digest != base.digest
    assert Vocabulary(base.tokens, Normalisation(nfkc=False), False, 10).digest != base.digest


def test_from_json_rejects_a_payload_without_the_specials_first():
    payload = vocab_of(["a"]).to_json()
    payload["tokens"] = ["a", PAD, UNK]
    with pytest.raises(ValueError, match="first two tokens"):
        Vocabulary.from_json(payload)


def test_from_json_rejects_a_payload_that_is_not_a_vocabulary():
    with pytest.raises(ValueError, match="my.json: not a textrnn vocabulary"):
        Vocabulary.from_json({"tokens": [PAD, UNK]}, origin="my.json")


def test_load_round_trips_through_a_file(tmp_path):
    vocab = vocab_of(["好", "b"])
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(vocab.to_json(), ensure_ascii=False), encoding="utf-8")
    assert Vocabulary.load(path) == vocab


def test_load_of_a_json_cut_in_half_names_the_file(tmp_path):
    path = tmp_path / "vocab.json"
    text = json.dumps(vocab_of(["a", "b", "c"]).to_json(), indent=2)
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.json"):
        Vocabulary.load(path)


def test_load_of_a_missing_file_says_which_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab stage"):
        Vocabulary.load(tmp_path / "vocab.json")
