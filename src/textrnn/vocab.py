"""Build, save and load the vocabulary; encode tokens into ids (Arrow, numpy and compiled loops)."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from textrnn import kernels
from textrnn.data import narrowest_ids_dtype
from textrnn.normalisation import Normalisation, normalise, truncate
from textrnn.tokenisation import WORD_CODE_BASE, TokenCodes, WordTable, count_tokens, token_codes, token_ids, word_table
from textrnn.utf8 import strings_of_code_points

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]  # index = id; tokens[0] = <pad>, tokens[1] = <unk>
    normalisation: Normalisation
    jieba: bool
    max_len: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def digest(self) -> str:
        """Content hash of everything that decides the ids of a text (tokens and tokeniser settings)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def to_json(self) -> dict:
        return {"tokens": list(self.tokens), "specials": {PAD: PAD_ID, UNK: UNK_ID},
                "tokeniser": {"normalisation": asdict(self.normalisation), "jieba": self.jieba,
                              "max_len": self.max_len}}

    @functools.cached_property
    def token_array(self) -> pa.StringArray:
        """The tokens as an Arrow array, to look words up in (index = id)."""
        return pa.array(self.tokens, pa.string())

    @property
    def ids_dtype(self) -> np.dtype:
        """The narrowest dtype that holds every id, for encoded splits on disk: uint16 up to 65,536 tokens
        (half the bytes of int32 to write, map and read), else int32."""
        return narrowest_ids_dtype(len(self.tokens) - 1)

    @functools.cached_property
    def point_ids(self) -> np.ndarray:
        """The id of every one-character token by code point (<unk> for those not in the vocabulary)."""
        ids = np.full(WORD_CODE_BASE, UNK_ID, dtype=np.int32)
        for i, token in enumerate(self.tokens[2:], start=2):
            if len(token) == 1:
                ids[ord(token)] = i
        return ids

    @functools.cached_property
    def word_table(self) -> WordTable:
        """The tokens longer than one character with their ids, to look words up in by their bytes."""
        words = [(token, i) for i, token in enumerate(self.tokens) if len(token) > 1]
        return word_table([token for token, _ in words], np.array([i for _, i in words], np.int32))

    @classmethod
    def from_json(cls, payload: dict, origin: str = "vocab.json") -> Vocabulary:
        try:
            tokens = tuple(payload["tokens"])
            tok = payload["tokeniser"]
            vocab = cls(tokens=tokens, normalisation=Normalisation(**tok["normalisation"]),
                        jieba=bool(tok["jieba"]), max_len=int(tok["max_len"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{origin}: not a textrnn vocabulary ({err!r})") from err
        if tokens[:2] != (PAD, UNK):
            raise ValueError(f"{origin}: the first two tokens must be {PAD!r} and {UNK!r}")
        return vocab

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: vocabulary missing (run the vocab stage)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: corrupt vocabulary JSON ({err}); rerun the vocab stage") from err
        return cls.from_json(payload, origin=str(path))


class TokenCounter:
    """Token counts accumulated batch by batch: one-character tokens in an array indexed by code point,
    longer ones in Arrow tables (no per-token Python loop, no string per token)."""

    def __init__(self, compact_every: int = 32):
        self._points = np.zeros(WORD_CODE_BASE, dtype=np.int64)
        self._tables: list[pa.Table] = []
        self._compact_every = compact_every

    def add(self, tokens: TokenCodes) -> None:
        word_counts = np.zeros(len(tokens.words), np.int64)
        kernels.count_codes(self._points, word_counts, tokens.codes, WORD_CODE_BASE)
        if len(tokens.words):
            self.add_table(pa.table({"token": tokens.words, "count": pa.array(word_counts, pa.int64())}))

    def add_texts(self, texts: pa.Array) -> None:
        """Count the tokens of texts (without jieba) as they are cut, with no code per token in between:
        `add(token_codes(texts))` counts the same."""
        words, counts = count_tokens(texts, self._points)
        if len(words):
            self.add_table(pa.table({"token": words, "count": pa.array(counts, pa.int64())}))

    def add_table(self, counts: pa.Table) -> None:
        """Merge counts from elsewhere (another process's `table()`)."""
        self._tables.append(counts)
        if len(self._tables) >= self._compact_every:
            self._tables = [_sum_by_token(self._tables)]

    def table(self) -> pa.Table:
        seen = np.flatnonzero(self._points)
        points = pa.table({"token": strings_of_code_points(seen), "count": pa.array(self._points[seen])})
        return _sum_by_token([points, *self._tables])


def _sum_by_token(tables: list[pa.Table]) -> pa.Table:
    merged = pa.concat_tables(tables).group_by("token", use_threads=False).aggregate([("count", "sum")])
    return merged.rename_columns(["token", "count"])


def select_tokens(counts: pa.Table, min_freq: int, max_size: int) -> tuple[str, ...]:
    """Tokens with count >= min_freq, most frequent first (ties by token), capped so that the vocabulary
    with its two specials holds at most max_size entries."""
    frequent = counts.filter(pc.greater_equal(counts.column("count"), min_freq))
    frequent = frequent.filter(pc.invert(pc.is_in(frequent.column("token"), pa.array([PAD, UNK, ""]))))
    order = pc.sort_indices(frequent, sort_keys=[("count", "descending"), ("token", "ascending")])
    chosen = frequent.column("token").take(order).to_pylist()[: max_size - 2]
    return (PAD, UNK, *chosen)


def encode(texts: pa.Array, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """Normalised texts → (ids int32 flat, offsets int64 with len(texts)+1 entries), each row cut to max_len.

    Unknown tokens map to <unk>; a text with no tokens encodes as an empty row.
    """
    ids, offsets, _ = encode_texts(texts, vocab)
    return ids, offsets


def encode_texts(texts: pa.Array, vocab: Vocabulary, dtype: np.dtype = np.int32) -> tuple[np.ndarray, np.ndarray, int]:
    """`encode` with the ids as `dtype` (int32, or the vocabulary's `ids_dtype`), and how many are <unk>.
    Without jieba, the texts are cut and looked up in one compiled pass (`token_ids`)."""
    if vocab.jieba:
        return encode_codes(token_codes(texts, use_jieba=True), vocab, dtype)
    _check_ids_fit(vocab, dtype)
    return token_ids(texts, vocab.point_ids, vocab.word_table, vocab.max_len, UNK_ID, dtype)


def encode_codes(tokens: TokenCodes, vocab: Vocabulary, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, int]:
    """`encode_tokens`, and how many of the ids are <unk>."""
    ids, offsets = encode_tokens(tokens, vocab, dtype)
    return ids, offsets, int(np.count_nonzero(ids == UNK_ID))


def encode_tokens(tokens: TokenCodes, vocab: Vocabulary, dtype: np.dtype = np.int32) -> tuple[np.ndarray, np.ndarray]:
    """`encode` of texts already tokenised, the ids as `dtype` (int32, or the vocabulary's `ids_dtype`)."""
    _check_ids_fit(vocab, dtype)
    word_ids = pc.fill_null(pc.index_in(tokens.words, value_set=vocab.token_array), UNK_ID)
    ids = np.empty(len(tokens.codes), dtype)
    kernels.ids_of_codes(tokens.codes, vocab.point_ids, word_ids.to_numpy(zero_copy_only=False).astype(np.int32),
                         WORD_CODE_BASE, ids)
    offsets = tokens.row_offsets.astype(np.int64)
    if np.diff(offsets).max(initial=0) <= vocab.max_len:
        return ids, offsets
    return kernels.first_of_each_row(ids, offsets, vocab.max_len)


def _check_ids_fit(vocab: Vocabulary, dtype: np.dtype) -> None:
    if np.iinfo(dtype).max < len(vocab) - 1:
        raise ValueError(f"encode: {np.dtype(dtype).name} cannot hold the ids of {len(vocab)} tokens")


def encode_raw(texts: list[str] | pa.Array, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """Raw texts (as a user gives them) → ids, applying the saved normalisation first."""
    array = texts if isinstance(texts, pa.Array) else pa.array(texts, pa.string())
    return encode(truncate(normalise(array, vocab.normalisation), vocab.normalisation.max_chars), vocab)
