"""Each compiled kernel against the library call it replaces, on the data stages of the 200 MB benchmark.

    .venv/bin/python bench/kernels.py [--mb 200] [--repeat 5] [--workdir DIR]

1. Generates bench/data_throughput.py's corpus (--mb MB of unique review-like rows).
2. Runs ingest, clean and vocab once (1 worker), timing each stage's wall time.
3. Runs them again with every kernel of `textrnn.kernels` wrapped: at each call, on the inputs the stage
   passes it, the kernel and its library peer run in turn, --repeat times (interleaved, so a slow spell
   of the shared machine falls on both); per call the fastest of each counts, summed over the stage.
4. The kernels only the jieba path calls (token_spans, gather_spans, count_codes, ids_of_codes,
   first_of_each_row) on the same vocab stage's texts, through `token_codes` and `encode_codes`.
Prints per kernel: calls, kernel s, library s, and the saving (library - kernel) as % of its stage's time.
The kernels that saved under 5% (splice_rows, sorted_positions, merge_sorted_keys, gather_spans) are gone;
docs/kernels.md has their figures, measured by this script before they went.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).parent))
import data_throughput

from textrnn import kernels, lenient, pure_kernels, text
from textrnn.config import CleanParams, IngestParams, VocabParams

STAGE = ["-"]  # the stage now running, for the wrappers
TIMES: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])  # (stage, kernel): calls, k, lib
LOCK = threading.Lock()
INSIDE = threading.local()  # a peer that calls a kernel (the Arrow passes splice rows) runs it unmeasured


def _strings(data, offsets, large=True):
    offsets = np.asarray(offsets, np.int64) - int(offsets[0])
    array = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
    return array if large else array.cast(pa.string())


def csv_ends_numpy(data, state, delimiter, quote):
    """Record ends by quote parity (a doubled quote toggles twice), the vectorised way; the same ends as
    Arrow's parser for this corpus (quotes only around fields), from a field start."""
    quotes = np.cumsum(data == quote) & 1
    ends = np.flatnonzero(((data == 10) | (data == 13)) & (quotes == 0))
    return (int(ends[-1]) + 1 if len(ends) else -1), state


def normalise_arrow(data, offsets, valid, flags, traits, lower):
    s = text.Normalisation(nfkc=bool(flags & kernels.NFKC), lowercase=bool(flags & kernels.LOWERCASE),
                           strip_html=bool(flags & kernels.STRIP_HTML), placeholders=bool(flags & kernels.PLACEHOLDERS))
    return text._normalise_with_arrow(_strings(data, offsets, large=False), s)


def hash_pandas(data, offsets, key):
    import pandas as pd

    strings = _strings(data, offsets).to_numpy(zero_copy_only=False)
    return pd.util.hash_array(strings, hash_key=key.decode(), categorize=False)


def count_rows_numpy(data, offsets, classes, separator, word, point_counts):
    spans = pure_kernels.token_spans(data, offsets, classes, separator, word, False)
    words = pc.dictionary_encode(_strings(*pure_kernels.gather_spans(data, spans[3], spans[4])))
    point_counts += np.bincount(spans[1], minlength=len(point_counts))[:len(point_counts)]
    return words.dictionary, np.bincount(words.indices.to_numpy(), minlength=len(words.dictionary))


def count_codes_numpy(point_counts, word_counts, codes, base):
    point = codes < base
    point_counts += np.bincount(codes[point], minlength=len(point_counts))
    word_counts += np.bincount(codes[~point] - base, minlength=len(word_counts))


# kernel name: (library peer, indices of the arguments it writes into: copied before each timed run)
PEERS = {
    "utf8_valid": (lambda data: lenient.arrow_valid_utf8(data), ()),
    "csv_record_ends": (csv_ends_numpy, ()),
    "normalise_common": (normalise_arrow, ()),
    "hash_rows": (hash_pandas, ()),
    "count_rows": (count_rows_numpy, (5,)),
    "word_table": (pure_kernels.word_table, ()),
    "encode_rows": (pure_kernels.encode_rows, (12,)),
    "token_spans": (pure_kernels.token_spans, ()),
    "count_codes": (count_codes_numpy, (0, 1)),
    "ids_of_codes": (pure_kernels.ids_of_codes, (4,)),
    "first_of_each_row": (pure_kernels.first_of_each_row, ()),
}


def _fastest(function, args, writes, repeat):
    best = float("inf")
    for _ in range(repeat):
        copies = [a.copy() if i in writes else a for i, a in enumerate(args)]
        start = time.perf_counter()
        function(*copies)
        best = min(best, time.perf_counter() - start)
    return best


def wrapped(name, kernel, repeat):
    peer, writes = PEERS[name]

    def measured(*args):
        if getattr(INSIDE, "busy", False):
            return kernel(*args)
        with LOCK:
            INSIDE.busy = True
            k = lib = float("inf")
            for _ in range(repeat):  # interleaved: one of each in turn
                k = min(k, _fastest(kernel, args, writes, 1))
                lib = min(lib, _fastest(peer, args, writes, 1))
            entry = TIMES[(STAGE[0], name)]
            entry[0] += 1
            entry[1] += k
            entry[2] += lib
            INSIDE.busy = False
        return kernel(*args)

    return measured


@contextlib.contextmanager
def stage(name):
    STAGE[0] = name
    yield


def run_stages(csv_path: Path, out: Path) -> dict[str, float]:
    from textrnn.stages import clean, ingest, vocab

    seconds = {}
    for name, run in (
            ("ingest", lambda: ingest.run(out / "raw", IngestParams(source=str(csv_path), chunk_rows=100_000,
                                                                     workers=1))),
            ("clean", lambda: clean.run(out / "raw", out / "clean", out / "rejects", CleanParams(workers=1))),
            ("vocab", lambda: vocab.run(out / "clean", out / "vocab", VocabParams(workers=1)))):
        with stage(name):
            start = time.perf_counter()
            run()
            seconds[name] = time.perf_counter() - start
    return seconds


def jieba_path_kernels(out: Path) -> None:
    """The token-code path (as with jieba, minus jieba's own segmentation) over the clean train shards."""
    from textrnn.stages.vocab import shard_texts
    from textrnn.vocab import TokenCounter, Vocabulary, encode_codes

    vocabulary = Vocabulary.load(out / "vocab" / "vocab.json")
    with stage("vocab"):
        for shard in sorted((out / "clean" / "train").glob("*.parquet")):
            tokens = text.token_codes(shard_texts(str(shard)))
            TokenCounter().add(tokens)
            encode_codes(tokens, vocabulary, vocabulary.ids_dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if not kernels.COMPILED:
        sys.exit(f"bench/kernels.py measures the compiled kernels, which are not built ({kernels.WHY_PURE})")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        rows = data_throughput.generate_corpus(root / "corpus.csv", args.mb)
        size_mb = (root / "corpus.csv").stat().st_size / 1e6
        stage_s = run_stages(root / "corpus.csv", root / "plain")
        for name in PEERS:
            setattr(kernels, name, wrapped(name, getattr(kernels, name), args.repeat))
        run_stages(root / "corpus.csv", root / "measured")
        jieba_path_kernels(root / "measured")
    print(f"input: {size_mb:.0f} MB, {rows:,} rows; fastest of {args.repeat} per call, kernel and library in turn")
    print("stage seconds (plain run): " + ", ".join(f"{k} {v:.2f}" for k, v in stage_s.items()))
    print(f"{'kernel':<18} {'stage':<7} {'calls':>6} {'kernel s':>9} {'library s':>9} {'saving % of stage':>18}")
    for (name_stage, name), (calls, k, lib) in sorted(TIMES.items(), key=lambda item: list(PEERS).index(item[0][1])):
        print(f"{name:<18} {name_stage:<7} {calls:>6} {k:>9.3f} {lib:>9.3f} "
              f"{100 * (lib - k) / stage_s[name_stage]:>17.1f}%")


if __name__ == "__main__":
    main()
