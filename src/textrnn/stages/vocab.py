"""vocab: count tokens of the train split, pick the vocabulary, encode every split for training.

Outputs in `out/`: vocab.json (tokens + tokeniser settings), labels.json, stats.json, and per split
`<split>/ids.bin` (int32 token ids), `<split>/offsets.bin` (int64, rows+1), `<split>/labels.bin` (int64),
described by `<split>/meta.json`; all memory-mappable with numpy.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import pyarrow as pa

from textrnn.cleaning import SPLITS
from textrnn.config import VocabParams
from textrnn.data import write_encoded_split
from textrnn.io import atomic_dir, iter_batches, read_json, write_json_into
from textrnn.parallel import make_executor, ordered_map
from textrnn.text import Normalisation, token_codes
from textrnn.vocab import UNK_ID, TokenCounter, Vocabulary, encode, select_tokens

log = logging.getLogger(__name__)


def run(clean: Path, out: Path, p: VocabParams) -> dict:
    clean = Path(clean)
    labels = read_json(clean / "labels.json")
    normalisation = Normalisation(**read_json(clean / "normalisation.json"))
    with make_executor("thread", p.workers) as pool:
        return _build(clean, out, p, labels, normalisation, pool)


def _build(clean: Path, out: Path, p: VocabParams, labels: list, normalisation: Normalisation,
           pool: Executor) -> dict:
    counter = TokenCounter()
    window = 2 * p.workers
    batches = iter_batches(clean / "train", columns=["text"])
    for tokens in ordered_map(pool, lambda b: token_codes(b.column("text"), use_jieba=p.jieba), batches, window):
        counter.add(tokens)
    tokens = select_tokens(counter.table(), p.min_freq, p.max_size)
    vocab = Vocabulary(tokens=tokens, normalisation=normalisation, jieba=p.jieba, max_len=p.max_len)
    stats = {"vocab_size": len(vocab), "vocab_digest": vocab.digest, "splits": {}}
    lookup = pa.array(vocab.tokens, pa.string())
    with atomic_dir(out) as tmp:
        write_json_into(tmp, "vocab.json", vocab.to_json())
        write_json_into(tmp, "labels.json", labels)
        for split in SPLITS:
            batches = iter_batches(clean / split, columns=["text", "label_id"])
            encoded = ordered_map(pool, lambda b: _encode_batch(b, vocab, lookup), batches, window)
            stats["splits"][split] = write_encoded_split(tmp / split, encoded)
        write_json_into(tmp, "stats.json", stats)
    log.info("vocab: %d tokens; %s", len(vocab),
             {s: (v["rows"], v["oov_rate"]) for s, v in stats["splits"].items()})
    return stats


def _encode_batch(batch: pa.RecordBatch, vocab: Vocabulary, lookup: pa.Array):
    ids, offsets = encode(batch.column("text"), vocab, lookup)
    labels = batch.column("label_id").to_numpy().astype(np.int64)
    return ids, offsets, labels, int(np.count_nonzero(ids == UNK_ID))
