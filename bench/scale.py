"""Every stage at two corpus sizes: wall time and peak RSS of ingest, clean, vocab, train, evaluate and
export, run through the real stage functions (what `textrnn stage NAME` runs) at 1× and 10× a base size.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/scale.py [--mb 1000] [--scale 10] [--workdir DIR]
        [--set SECTION.KEY=VALUE ...] [--keep]

1. Generates two corpora with bench/data_throughput.py's generator (unique review-like rows recombined
   from the default corpus's clauses): --mb / --scale MB (the base, 1×) and --mb MB (--scale×).
2. For each, a fresh project folder under a temporary directory: params.yaml of this checkout with
   `ingest.source` pointing at the corpus and every `--set` applied (e.g. a small model for a quick run:
   --set model.hidden_size=32 --set train.epochs=1), then each stage in its own interpreter, one after
   another, so that each stage's peak RSS is its own (ru_maxrss of the child, and of its children where
   the stage starts processes, e.g. train.nproc > 1).
3. Prints a table (seconds, peak MiB per stage and size), the key metrics of each run, and last the
   ratios 10×/1× of each stage's peak RSS and time (target: peak RSS ratio ≤ 1.5 for every stage).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from data_throughput import generate_corpus

REPO = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "clean", "vocab", "train", "evaluate", "export")

# Runs in the stage's own interpreter, in the project folder (params' paths are relative to it).
_CHILD = """
import json, resource, sys, time
from textrnn.config import load_params
from textrnn.pipeline import run_stage
params = load_params("params.yaml")
start = time.perf_counter()
run_stage(sys.argv[1], params)
seconds = time.perf_counter() - start
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": max(own, children) / 1024}))
"""


def parse_set(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected SECTION.KEY=VALUE")
    return key, yaml.safe_load(value)


def project_params(corpus: Path, overrides: list[tuple[str, object]]) -> dict:
    """This checkout's params.yaml with the corpus as ingest's source and the overrides applied."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["ingest"]["source"] = str(corpus)
    for dotted, value in overrides:
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
    return raw


def run_pipeline(corpus: Path, project: Path, overrides: list[tuple[str, object]]) -> dict[str, dict]:
    """Each stage in a fresh interpreter inside `project`; its seconds and peak RSS."""
    project.mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump(project_params(corpus, overrides), sort_keys=False),
                                         encoding="utf-8")
    results = {}
    for stage in STAGES:
        done = subprocess.run([sys.executable, "-c", _CHILD, stage], cwd=project, capture_output=True, text=True,
                              env={**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")})
        if done.returncode != 0:
            raise SystemExit(f"{stage} failed on {corpus.name}:\n{done.stderr[-4000:]}")
        results[stage] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {corpus.name} {stage}: {results[stage]['seconds']:.1f} s, {results[stage]['peak_mib']:.0f} MiB",
              flush=True)
    return results


def headline(project: Path) -> str:
    metrics = json.loads((project / "metrics" / "metrics.json").read_text(encoding="utf-8"))
    seen = (f", baseline saw {metrics['baseline_train_rows']:,} of {metrics['train_rows']:,} train rows"
            if "baseline_train_rows" in metrics else "")
    return (f"val accuracy RNN {metrics['val_accuracy']:.4f}, "
            f"baseline {metrics.get('baseline_val_accuracy', float('nan')):.4f}; "
            f"test accuracy RNN {metrics['test_accuracy']:.4f}, "
            f"baseline {metrics.get('baseline_test_accuracy', float('nan')):.4f}{seen}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1000, help="size of the large corpus (the base is --mb / --scale)")
    parser.add_argument("--scale", type=float, default=10)
    parser.add_argument("--workdir", default=None, help="where the temporary projects go (default: the system's)")
    parser.add_argument("--set", dest="overrides", type=parse_set, action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="param override for every stage (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the projects (their path is printed)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="textrnn-scale-", dir=args.workdir))
    sizes = {"1x": args.mb / args.scale, f"{args.scale:g}x": args.mb}
    results, corpora = {}, {}
    for name, megabytes in sizes.items():
        corpora[name] = root / f"corpus-{name}.csv"
        rows = generate_corpus(corpora[name], megabytes, seed=0 if name == "1x" else 1)
        print(f"{name}: {corpora[name].stat().st_size / 1e6:.0f} MB, {rows:,} rows", flush=True)
        results[name] = run_pipeline(corpora[name], root / f"project-{name}", args.overrides)
        print(f"  {headline(root / f'project-{name}')}", flush=True)
        corpora[name].unlink()
    small, big = results.values()
    print(f"\noverrides: {' '.join(f'{k}={v}' for k, v in args.overrides) or 'none'}")
    header = " | ".join(f"{n} s | {n} MiB" for n in sizes)
    print(f"| stage | {header} |\n|---|" + "---|" * (2 * len(sizes)))
    for stage in STAGES:
        cells = " | ".join(f"{r[stage]['seconds']:.1f} | {r[stage]['peak_mib']:.0f}" for r in results.values())
        print(f"| {stage} | {cells} |")
    for stage in STAGES:
        print(f"ratio {stage} {args.scale:g}x/1x: peak RSS {big[stage]['peak_mib'] / small[stage]['peak_mib']:.2f} "
              f"(target <= 1.5), time {big[stage]['seconds'] / small[stage]['seconds']:.2f}")
    if args.keep:
        print(f"projects kept in {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
