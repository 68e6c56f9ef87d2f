"""textrnn.pure_kernels: the numpy/Arrow loops of a light installation give what the compiled ones give."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textrnn import _kernels as compiled
from textrnn import pure_kernels as pure
from textrnn import tokenisation, utf8
from textrnn.normalisation import Normalisation, normalise, truncate
from textrnn.tokenisation import tokenise
from textrnn.vocab import PAD, UNK, UNK_ID, Vocabulary

review_text = st.lists(st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.sampled_from(list("好差爱恨喜欢厌恶书质量中文 ，。！?!a Zé1\t\u3000…①ﬁ@<&")
                    + ["hello", "www.x.cn", "3.5", "  "])),
    max_size=30).map("".join)


def _ids_by(kernels, texts: pa.StringArray, vocab: Vocabulary, max_len: int):
    """`text.token_ids`' call of encode_rows, made on the given kernel module."""
    data, offsets = utf8.utf8_buffers(texts)
    table = vocab.word_table
    slots = compiled.word_table(table.data, table.offsets) if kernels is compiled else pure.word_table(None, None)
    ids = np.empty(int(np.minimum(np.diff(offsets), max_len).sum()), np.int32)
    row_offsets, unknowns = kernels.encode_rows(
        data, offsets, tokenisation._character_classes(), tokenisation._SEPARATOR, tokenisation._WORD, vocab.point_ids,
        table.data, table.offsets, table.ids, slots, max_len, UNK_ID, ids)
    return ids[:row_offsets[-1]].tolist(), row_offsets.tolist(), unknowns


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(review_text, min_size=1, max_size=8), keep=st.integers(0, 3), max_len=st.integers(1, 12),
       start=st.integers(0, 2))
def test_pure_token_ids_equal_the_compiled_ones(texts, keep, max_len, start):
    # The vocabulary holds every `keep`-th token of the texts themselves: known and unknown words and
    # characters side by side; rows are cut at max_len; the array may be a slice.
    normalised = truncate(normalise(pa.array(texts, pa.string()), Normalisation()), 1000).slice(
        min(start, len(texts) - 1))
    seen = sorted({t for row in tokenise(normalised).to_pylist() for t in row if t})
    vocab = Vocabulary(tokens=(PAD, UNK, *seen[::keep + 1]) if keep < 3 else (PAD, UNK),
                       normalisation=Normalisation(), jieba=False, max_len=max_len)
    assert _ids_by(pure, normalised, vocab, max_len) == _ids_by(compiled, normalised, vocab, max_len)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(review_text, min_size=1, max_size=8), every_span=st.booleans())
def test_pure_token_spans_and_their_strings_equal_the_compiled_ones(texts, every_span):
    normalised = normalise(pa.array(texts, pa.string()), Normalisation())
    args = (*utf8.utf8_buffers(normalised), tokenisation._character_classes(), tokenisation._SEPARATOR,
            tokenisation._WORD, every_span)
    pure_spans, compiled_spans = pure.token_spans(*args), compiled.token_spans(*args)
    assert [a.tolist() for a in pure_spans] == [a.tolist() for a in compiled_spans]
    data = utf8.utf8_buffers(normalised)[0]
    starts, ends = compiled_spans[3], compiled_spans[4]
    gathered, offsets = pure.gather_spans(data, starts, ends)  # (the only version: none is compiled)
    assert [gathered[a:b].tobytes() for a, b in zip(offsets[:-1], offsets[1:])] == [
        data[a:b].tobytes() for a, b in zip(starts, ends)]


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=8), limit=st.integers(1, 5))
def test_pure_first_of_each_row_and_ids_of_codes_equal_the_compiled_ones(lengths, limit):
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.arange(offsets[-1], dtype=np.int32) * 7 % 11
    pure_cut, compiled_cut = pure.first_of_each_row(values, offsets, limit), compiled.first_of_each_row(
        values, offsets, limit)
    assert [a.tolist() for a in pure_cut] == [a.tolist() for a in compiled_cut]
    base = 100
    codes = np.where(values % 2 == 0, values, base + values % 3).astype(np.int64)
    point_ids, word_ids = np.arange(base, dtype=np.int32)[::-1].copy(), np.array([5, 6, 7], np.int32)
    pure_ids, compiled_ids = np.empty(len(codes), np.int32), np.empty(len(codes), np.int32)
    pure.ids_of_codes(codes, point_ids, word_ids, base, pure_ids)
    compiled.ids_of_codes(codes, point_ids, word_ids, base, compiled_ids)
    assert pure_ids.tolist() == compiled_ids.tolist()


def test_textrnn_pure_selects_the_fallback_and_training_kernels_say_what_to_install():
    code = ("import sys; from textrnn import kernels; assert not kernels.COMPILED, kernels.WHY_PURE;"
            "assert 'textrnn._kernels' not in sys.modules\n"
            "try:\n    kernels.hash_rows(None, None, b'')\nexcept RuntimeError as err:\n    print(err)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TEXTRNN_PURE": "1"},
                         capture_output=True, text=True, check=True).stdout
    assert "needs the compiled kernels" in out and "[train]" in out


PREDICTOR_TEXTS = ["这本书太好了，我很喜欢！", "质量太差 3.5 分", "", "Ｈｅｌｌｏ <b>world</b> www.x.cn", "   "]


@pytest.mark.parametrize("texts", [PREDICTOR_TEXTS])
def test_normalise_and_encode_in_pure_mode_equal_the_compiled_path(texts):
    # The whole tokeniser path of `Predictor.encode`, run in a process where the fallback is in use.
    code = ("import json, sys; import pyarrow as pa;"
            "from textrnn.normalisation import normalise, truncate, Normalisation;"
            "from textrnn.vocab import Vocabulary, encode; texts = json.loads(sys.argv[1]);"
            "v = Vocabulary(tokens=tuple(json.loads(sys.argv[2])), normalisation=Normalisation(), jieba=False,"
            " max_len=8); n = truncate(normalise(pa.array(texts, pa.string()), v.normalisation), 1000);"
            "ids, offsets = encode(n, v); print(json.dumps([n.to_pylist(), ids.tolist(), offsets.tolist()]))")
    tokens = [PAD, UNK, "好", "书", "喜", "欢", "差", "xxnum", "hello", "world", "xxurl", "!"]
    args = [sys.executable, "-c", code, json.dumps(texts), json.dumps(tokens)]
    runs = [subprocess.run(args, env={**os.environ, "TEXTRNN_PURE": pure_flag}, capture_output=True, text=True,
                           check=True).stdout for pure_flag in ("1", "0")]
    assert json.loads(runs[0]) == json.loads(runs[1])
    assert json.loads(runs[0])[1]  # the texts did encode to ids
