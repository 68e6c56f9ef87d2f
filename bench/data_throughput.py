"""Data-stage throughput and memory: ingest + clean + vocab (count and encode) of this project against a
straightforward pandas + Python-loop reference doing the same normalisation and counting, in one run.

    .venv/bin/python bench/data_throughput.py [--mb 200] [--scale 10] [--reference-mb 50] [--repeat 5]
                                              [--workdir DIR]

1. Generates a CSV of unique review-like rows (clauses of the real default corpus recombined), --mb MB.
2. Times the project's stages with 1 and 2 workers, and the reference (on the first --reference-mb MB,
   since it is slow; its MB/s is what is compared), printing MB/s and the ratios. The three run in turn,
   --repeat rounds of them, so a slow spell of a shared machine falls on all alike. Each measured run
   comes right after an unmeasured run of the same measurement, so that none pays for what a different
   one ran before it; for each, the fastest run counts (the least disturbed). Every round's seconds are
   printed too, and the speed ratios also as the medians of the rounds' own ratios: this VM's speed
   swings within seconds, and one worker's fastest runs lie further under its median than the others'.
3. Peak RSS of the project's stages at 1× and --scale× the input (each in a fresh process), and the ratio.
Ratios are printed last.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np

from textrnn.readers import builtin_corpus_dir

CLAUSE_SPLIT = re.compile(r"(?<=[，。！？；,.!?;])")


def clauses_by_label() -> dict[str, list[str]]:
    out = {}
    for name, label in (("pos.txt", "pos"), ("neg.txt", "neg")):
        text = (builtin_corpus_dir() / name).read_text(encoding="utf-8")
        out[label] = sorted({c.strip() for line in text.splitlines() for c in CLAUSE_SPLIT.split(line) if c.strip()})
    return out


def generate_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Rows of 2-5 clauses of one label, numbered so that every row is unique. Returns the row count."""
    rng = np.random.default_rng(seed)
    pools = clauses_by_label()
    target, written, rows = int(megabytes * 1e6), 0, 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        while written < target:
            label = "pos" if rng.random() < 0.5 else "neg"
            pool = pools[label]
            picks = rng.integers(0, len(pool), size=rng.integers(2, 6))
            text = "".join(pool[i] for i in picks) + f" #{rows}"
            writer.writerow([text, label])
            written += len(text.encode()) + 6
            rows += 1
    return rows


def run_project(csv_path: Path, workdir: Path, workers: int) -> float:
    """ingest + clean + vocab through the real stage functions, with the default executors (threads);
    returns seconds."""
    from textrnn.config import CleanParams, IngestParams, VocabParams
    from textrnn.stages import clean, ingest, vocab

    start = time.perf_counter()
    ingest.run(workdir / "raw", IngestParams(source=str(csv_path), chunk_rows=100_000, workers=workers))
    clean.run(workdir / "raw", workdir / "clean", workdir / "rejects", CleanParams(workers=workers))
    vocab.run(workdir / "clean", workdir / "vocab", VocabParams(workers=workers))
    return time.perf_counter() - start


_TAG, _URL = re.compile(r"<[^<>]{0,200}>"), re.compile(r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"]+")
_EMAIL, _NUM = re.compile(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b"), re.compile(r"\b\d+(?:[.,]\d+)*\b")
_CTRL, _SPACE = re.compile(r"[\x00-\x1f\x7f\u200b-\u200f\ufeff]"), re.compile(r"\s+")
_TOKEN = re.compile(r"[\u4e00-\u9fff]|[^\W\u4e00-\u9fff]+|[^\w\s]")


def reference(csv_path: Path, max_len: int = 200) -> float:
    """The straightforward way: pandas to read, then a Python loop with str methods, re and Counter."""
    import pandas as pd

    start = time.perf_counter()
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    seen: dict[str, str] = {}
    for text, label in zip(frame["text"], frame["label"]):
        text = unicodedata.normalize("NFKC", text)
        text = html.unescape(_TAG.sub(" ", text))
        text = _NUM.sub(" xxnum ", _EMAIL.sub(" xxemail ", _URL.sub(" xxurl ", text))).lower()
        text = _SPACE.sub(" ", _CTRL.sub(" ", text)).strip()
        if text and text not in seen:
            seen[text] = label
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for text in seen:
        unit = int(hashlib.md5(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        splits["test" if unit < 0.1 else "val" if unit < 0.2 else "train"].append(text)
    counts = collections.Counter(tok for text in splits["train"] for tok in _TOKEN.findall(text))
    vocab = {tok: i + 2 for i, (tok, n) in enumerate(counts.most_common(29_998)) if n >= 2}
    for texts in splits.values():
        [[vocab.get(tok, 1) for tok in _TOKEN.findall(text)][:max_len] for text in texts]
    return time.perf_counter() - start


def measure_in_subprocess(mode: str, csv_path: Path, workdir: Path, workers: int = 1) -> dict:
    """Run one measurement in a fresh interpreter, so its peak RSS is its own."""
    code = ("import json, resource, sys; sys.path.insert(0, 'bench'); import data_throughput as b; "
            f"from pathlib import Path; s = b.{'run_project' if mode == 'project' else 'reference'}("
            f"Path({str(csv_path)!r})" + (f", Path({str(workdir)!r}), {workers})" if mode == "project" else ")")
            + "; print(json.dumps({'seconds': s, 'peak_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"
            " / 1024}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fastest_in_rounds(rounds: int, measurements: dict[str, tuple]) -> dict[str, dict]:
    """Each measurement (name: measure_in_subprocess arguments) run `rounds` times, in rounds that run
    every measurement once in turn, so that a slow spell of a shared machine falls on all of them alike.
    Each measured run comes right after an unmeasured run of the same measurement: on this VM a run pays
    for the memory it needs beyond what the run before it freed (the host backs memory the guest freed
    again on first touch), so whichever run came before would move the figures (ingest's system time
    roughly doubled when a run followed a different measurement rather than its own kind).
    Per measurement: the fastest measured run (the least disturbed), every measured run's seconds in
    round order, and the highest peak RSS."""
    results: dict[str, list[dict]] = {name: [] for name in measurements}
    for run in range(rounds):
        for name, (mode, csv_path, workdir, workers) in measurements.items():
            outputs = workdir.with_name(f"{workdir.name}-{run}")
            for measured in (False, True):
                result = measure_in_subprocess(mode, csv_path, outputs, workers)
                # Each run starts from the same machine state: kept, the outputs would pile up ~0.7 GB of
                # page cache per run, and each later run would write into pages never used before, which
                # a VM's host may back again on first touch, far dearer than pages in use: system time
                # grew several-fold within a dozen runs.
                shutil.rmtree(outputs, ignore_errors=True)
                if measured:
                    results[name].append(result)
    return {name: {"seconds": min(r["seconds"] for r in runs), "rounds": [r["seconds"] for r in runs],
                   "peak_mib": max(r["peak_mib"] for r in runs)}
            for name, runs in results.items()}


def median_ratio(numerators: list[float], denominators: list[float]) -> float:
    """The median of each round's own ratio: a slow spell of the machine falls on both runs of a round."""
    return float(np.median(np.divide(numerators, denominators)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200)
    parser.add_argument("--scale", type=float, default=10, help="size of the memory run, × --mb")
    parser.add_argument("--reference-mb", type=float, default=50)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the speed measurements; the fastest counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        small, ref_csv, big = root / "corpus.csv", root / "reference.csv", root / "corpus_big.csv"
        rows = generate_corpus(small, args.mb)
        generate_corpus(ref_csv, min(args.reference_mb, args.mb))
        os.sync()  # the corpora's writeback would otherwise compete with the first timed runs' disk writes
        size_mb, ref_mb = small.stat().st_size / 1e6, ref_csv.stat().st_size / 1e6
        fastest = fastest_in_rounds(args.repeat, {
            "one": ("project", small, root / "w1", 1), "two": ("project", small, root / "w2", 2),
            "ref": ("reference", ref_csv, root / "ref", 1)})  # (the reference writes nothing)
        one, two, ref = fastest["one"], fastest["two"], fastest["ref"]
        generate_corpus(big, args.mb * args.scale, seed=1)
        os.sync()
        big_mb = big.stat().st_size / 1e6
        scaled = measure_in_subprocess("project", big, root / "wbig", 1)
        print(f"input: {size_mb:.0f} MB, {rows:,} rows; reference on {ref_mb:.0f} MB; memory run {big_mb:.0f} MB")
        print(f"project, 1 worker: {size_mb / one['seconds']:.2f} MB/s ({one['seconds']:.1f} s)")
        print(f"project, 2 workers: {size_mb / two['seconds']:.2f} MB/s ({two['seconds']:.1f} s)")
        print(f"reference (pandas + Python loop): {ref_mb / ref['seconds']:.2f} MB/s ({ref['seconds']:.1f} s)")
        for label, result in (("project, 1 worker", one), ("project, 2 workers", two), ("reference", ref)):
            print(f"{label}, each round: " + " / ".join(f"{s:.2f}" for s in result["rounds"]) + " s")
        print(f"peak RSS at 1x ({size_mb:.0f} MB): {one['peak_mib']:.0f} MiB")
        print(f"peak RSS at {args.scale:g}x ({big_mb:.0f} MB): {scaled['peak_mib']:.0f} MiB")
        print(f"ratio project(1 worker)/reference MB/s: {(size_mb / one['seconds']) / (ref_mb / ref['seconds']):.2f}"
              " (target >= 10)")
        print("ratio project(1 worker)/reference MB/s, median of the rounds' own: "
              f"{size_mb / ref_mb * median_ratio(ref['rounds'], one['rounds']):.2f}")
        # Three decimals: this ratio lands near its target, and 1.697 printed as 1.70 read as met.
        print(f"ratio 2 workers/1 worker: {one['seconds'] / two['seconds']:.3f} (target >= 1.7)")
        print(f"ratio 2 workers/1 worker, median of the rounds' own: {median_ratio(one['rounds'], two['rounds']):.3f}")
        print(f"ratio peak RSS {args.scale:g}x/1x: {scaled['peak_mib'] / one['peak_mib']:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
