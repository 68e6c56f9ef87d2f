"""vocab: count tokens of the train split, pick the vocabulary, encode every split for training.

Outputs in `out/`: vocab.json (tokens + tokeniser settings), labels.json, stats.json, and per split
`<split>/ids.bin` (token ids: uint16, or int32 for a vocabulary over 65,536 tokens), `<split>/offsets.bin`
(int64, rows+1), `<split>/labels.bin` (int64), described by `<split>/meta.json` (which names the dtypes);
all memory-mappable with numpy.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa

from textrnn.cleaning import SPLITS
from textrnn.config import VocabParams
from textrnn.data import EncodedChunk, EncodedPart, join_encoded_parts, write_encoded_part, write_encoded_split
from textrnn.io import atomic_dir, list_shards, read_json, read_shard, single_array, write_json_into
from textrnn.normalisation import Normalisation
from textrnn.parallel import in_order, make_executor
from textrnn.tokenisation import TokenCodes, load_token_codes, prepare_tokeniser, save_token_codes, token_codes
from textrnn.vocab import TokenCounter, Vocabulary, encode_codes, encode_texts, select_tokens

log = logging.getLogger(__name__)


def run(clean: Path, out: Path, p: VocabParams) -> dict:
    clean = Path(clean)
    labels = read_json(clean / "labels.json")
    normalisation = Normalisation(**read_json(clean / "normalisation.json"))
    prepare_tokeniser()
    with make_executor(p.executor, p.workers) as pool:
        return _build(clean, out, p, labels, normalisation, pool)


def _build(clean: Path, out: Path, p: VocabParams, labels: list, normalisation: Normalisation,
           pool: Executor) -> dict:
    """Count and encode shard by shard in `pool`; results are taken in shard order, so the output is the
    same for any worker count. With jieba, whose segmentation runs per text in Python, the train shards
    are tokenised once: counting leaves their tokens in a scratch folder for encoding. The compiled
    tokeniser is faster than that write and read back, so without jieba every shard is tokenised again."""
    window = 2 * p.workers
    with atomic_dir(out) as tmp:
        scratch = (tmp / ".scratch").resolve()
        scratch.mkdir()
        shards = {split: [str(shard) for shard in list_shards(clean / split)] for split in SPLITS}
        tokenised = {shard: str(scratch / f"tokens-{i:05d}") for i, shard in enumerate(shards["train"]) if p.jieba}
        counter = TokenCounter()
        counting = (pool.submit(count_shard, shard, p.jieba, tokenised.get(shard)) for shard in shards["train"])
        for counts in in_order(counting, window):
            counter.add_table(counts)
        tokens = select_tokens(counter.table(), p.min_freq, p.max_size)
        vocab = Vocabulary(tokens=tokens, normalisation=normalisation, jieba=p.jieba, max_len=p.max_len)
        stats = {"vocab_size": len(vocab), "vocab_digest": vocab.digest, "splits": {}}
        write_json_into(tmp, "vocab.json", vocab.to_json())
        write_json_into(tmp, "labels.json", labels)
        # One stream over every split's shards: the workers never wait at a split's end. Threads hand their
        # shard's encoding back as arrays; worker processes write it beside the others, and this process
        # joins the files (nothing large goes through a pipe).
        if isinstance(pool, ProcessPoolExecutor):
            encoded = in_order((pool.submit(encode_shard_to_files, shard, vocab, str(scratch / f"{split}-{i:05d}"),
                                            tokenised.get(shard))
                                for split in SPLITS for i, shard in enumerate(shards[split])), window)
            join = join_encoded_parts
        else:
            encoded = in_order((pool.submit(encode_shard, shard, vocab, tokenised.get(shard))
                                for split in SPLITS for shard in shards[split]), window)
            join = write_encoded_split
        for split in SPLITS:
            stats["splits"][split] = join(tmp / split, itertools.islice(encoded, len(shards[split])), vocab.ids_dtype)
        write_json_into(tmp, "stats.json", stats)
        shutil.rmtree(scratch)
    log.info("vocab: %d tokens; %s", len(vocab),
             {s: (v["rows"], v["oov_rate"]) for s, v in stats["splits"].items()})
    return stats


def count_shard(shard: str, use_jieba: bool, tokenised: str | None = None) -> pa.Table:
    """Token counts of one train shard (runs in a worker); its tokens are saved to `tokenised` if given."""
    counter = TokenCounter()
    if use_jieba or tokenised:  # jieba's tokens are kept for encoding: they are counted from their codes
        tokens = shard_tokens(shard, use_jieba)
        if tokenised:
            save_token_codes(Path(tokenised), tokens)
        counter.add(tokens)
    else:
        counter.add_texts(shard_texts(shard))
    return counter.table()


def shard_tokens(shard: str, use_jieba: bool) -> TokenCodes:
    """The tokens of a whole shard, tokenised at once."""
    return token_codes(shard_texts(shard), use_jieba=use_jieba)


def shard_texts(shard: str) -> pa.Array:
    """The normalised texts of a clean shard, as one array."""
    return single_array(read_shard(shard, columns=["text"]).column("text"))


def encode_shard(shard: str, vocab: Vocabulary, tokenised: str | None = None) -> EncodedChunk:
    """Encode one shard (runs in a worker), from its tokens saved by `count_shard` where there are some."""
    if tokenised:
        table = read_shard(shard, columns=["label_id"])
        ids, offsets, unknown = encode_codes(load_token_codes(Path(tokenised)), vocab, vocab.ids_dtype)
    else:  # one read for the text and the labels
        table = read_shard(shard, columns=["text", "label_id"])
        ids, offsets, unknown = encode_texts(table.column("text"), vocab, vocab.ids_dtype)
    return ids, offsets, table.column("label_id").to_numpy(), unknown


def encode_shard_to_files(shard: str, vocab: Vocabulary, prefix: str, tokenised: str | None = None) -> EncodedPart:
    """`encode_shard` in a worker process: the encoding goes to files beside `prefix`, only a summary back."""
    return write_encoded_part(prefix, *encode_shard(shard, vocab, tokenised))
