"""`textrnn run | stage NAME | predict | serve | serve-model | ui`: one entry point for people, dvc.yaml and CI."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

from textrnn.config import ParamsError, load_params, parse_override
from textrnn.locking import ProjectBusyError
from textrnn.serving_settings import add_arguments as add_serve_model_arguments


def _params_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--profile", help="a profile laid over the params file: only the values that differ "
                                          "(e.g. tests/profiles/tiny.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one param (repeatable), e.g. --set train.epochs=2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textrnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline as a Prefect flow")
    _params_args(run)
    stage = sub.add_parser("stage", help="run one stage (what dvc.yaml calls)")
    stage.add_argument("name", choices=["source", "ingest", "clean", "vocab", "train", "evaluate", "export"],
                       help="source records ingest's input files; the others are the six stages")
    _params_args(stage)
    predict = sub.add_parser("predict", help="predict with an exported model (no torch needed)")
    predict.add_argument("texts", nargs="*", help="texts to classify (else --input, else lines on stdin)")
    predict.add_argument("--model", default="models/export", help="exported bundle folder")
    predict.add_argument("--input", help="CSV/TSV/JSONL/Parquet file of texts")
    predict.add_argument("--text-column", default="text", help="column of --input holding the text")
    predict.add_argument("--output", help="write predictions here (CSV, JSONL or Parquet by suffix)")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--explain", type=int, nargs="?", const=5, default=0, metavar="K",
                         help="add an 'explain' column: per class the K tokens (default 5) that moved its "
                              "probability most, with their signed contributions (occlusion)")
    serve = sub.add_parser("serve", help="serve the pipeline as a scheduled Prefect deployment")
    _params_args(serve)
    compare = sub.add_parser("compare", help="the promotion gate: new metrics against main's (exit 1: regressed)")
    _params_args(compare)
    compare.add_argument("--new", help="metrics of this run (default: paths.metrics)")
    base = compare.add_mutually_exclusive_group(required=True)
    base.add_argument("--base", help="main's metrics.json file")
    base.add_argument("--base-rev", help="a git revision whose committed paths.metrics is main's (e.g. origin/main)")
    compare.add_argument("--summary", help="append the markdown verdict to this file (e.g. $GITHUB_STEP_SUMMARY)")
    dvc_yaml = sub.add_parser("dvc-yaml", help="write dvc.yaml from the stage table and each stage's imports")
    dvc_yaml.add_argument("--check", action="store_true", help="only check that dvc.yaml is current (exit 1 if not)")
    add_serve_model_arguments(sub.add_parser("serve-model", help="serve an exported model over HTTP (no torch)"))
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict:
    return dict(parse_override(text) for text in args.overrides)


def load_from_args(args: argparse.Namespace):
    return load_params(args.params, overrides_from_args(args), profile=args.profile)


def set_local_state_defaults(root: Path) -> None:
    """Keep Prefect's database, results and cache inside the project, and stay offline."""
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "textrnn")  # stage logs in the Prefect UI
    # The temporary server migrates a fresh database first; on a busy 2-core machine that can pass the
    # default 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def _log_to_stderr() -> None:
    """The project's own INFO logs on stderr; other libraries stay at their defaults."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("textrnn")
    logger.propagate = False  # some libraries configure the root logger; print each line once
    if not logger.handlers:
        logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("textrnn").setLevel(logging.INFO)
    if args.command in ("stage", "predict", "serve-model"):
        _log_to_stderr()  # under `run` and `serve`, Prefect's handlers show the textrnn logger
    try:
        return _COMMANDS[args.command](args)
    except ParamsError as err:
        print(f"textrnn: invalid params: {err}", file=sys.stderr)
        return 2
    except ProjectBusyError as err:
        print(f"textrnn: {err}", file=sys.stderr)
        return 3
    except WrongCodeError as err:
        print(f"textrnn: {err}", file=sys.stderr)
        return 4
    except Exception as err:
        if not type(err).__module__.startswith("textrnn."):
            raise  # a bug: the traceback says where
        print(f"textrnn: {err}", file=sys.stderr)  # textrnn's own errors say what and what to do
        return 2


def cmd_run(args: argparse.Namespace) -> int:
    from textrnn.locking import project_lock

    check_runs_this_projects_code(Path.cwd())  # the flow's cache keys and dvc.lock must name the code that runs
    params = load_from_args(args)  # validate before Prefect starts anything
    with project_lock():  # busy: fail now, not after Prefect's server has started (the flow locks for real)
        pass
    if params.dvc.commit:  # likewise a DVC project that could not record the run at its end
        from textrnn.dvc_sync import check_can_commit

        check_can_commit(Path.cwd())
    set_local_state_defaults(Path.cwd())
    from textrnn_flows.pipeline import pipeline_for

    result = pipeline_for(params)(params_file=args.params, overrides=overrides_from_args(args), profile=args.profile)
    metrics = json.loads(Path(params.paths.metrics).read_text(encoding="utf-8"))
    print(f"model:    {params.paths.export}/ (ONNX bundle), checkpoint {params.paths.checkpoint}")
    print(f"metrics:  {params.paths.metrics}, report {params.paths.evaluation}/report.md")
    print(f"test accuracy: {metrics['test_accuracy']:.4f} (TF-IDF baseline "
          f"{metrics.get('baseline_test_accuracy', float('nan')):.4f})")
    return 0 if result is not None else 1


def cmd_stage(args: argparse.Namespace) -> int:
    from textrnn.freshness import run_recorded
    from textrnn.locking import project_lock
    from textrnn.source_record import record_source

    check_runs_this_projects_code(Path.cwd())
    params = load_from_args(args)
    with project_lock():
        if args.name == "source":
            result = record_source(Path(params.paths.source), params.ingest)
        else:  # always runs (DVC or the user decided it should); the manifest lets a later flow reuse it
            result = run_recorded(args.name, params, reuse_fresh=False)["result"]
    print(json.dumps(result, indent=2, sort_keys=True, default=str, ensure_ascii=False))
    return 0


class WrongCodeError(RuntimeError):
    """The running textrnn is not the code of the project folder the command runs in."""


def check_runs_this_projects_code(root: Path) -> None:
    """In a project folder with its own `src/textrnn` (a checkout, or the copy `dvc exp run --temp` and
    `dvc queue` make), the stage must run that code: DVC records the hashes of those files as the stage's
    code, so running another checkout's would record code that did not run."""
    import textrnn

    own = (root / "src" / "textrnn").resolve()
    running = Path(textrnn.__file__).resolve().parent
    if own.is_dir() and running != own:
        raise WrongCodeError(f"this project's code is {own}, but textrnn was imported from {running}; run "
                             "`PYTHONPATH=src python -m textrnn ...` here (dvc.yaml's commands do), or install "
                             "this checkout (`pip install -e .`)")


def cmd_compare(args: argparse.Namespace) -> int:
    from textrnn.promotion import compare, metrics_at_revision, read_metrics

    params = load_from_args(args)
    new_path = Path(args.new or params.paths.metrics)
    if args.base:
        base, where = read_metrics(Path(args.base)), args.base
    else:
        where = f"{params.paths.metrics} at {args.base_rev}"
        base = metrics_at_revision(args.base_rev, params.paths.metrics)
    verdict = compare(read_metrics(new_path), base, params.promote, str(new_path), where)
    report = verdict.markdown()
    print(report, end="")
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as handle:
            handle.write(report)
    return 0 if verdict.passed else 1


def cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from textrnn import dvc_yaml

    repo = Path.cwd()
    check_runs_this_projects_code(repo)
    if args.check:
        if dvc_yaml.differs(repo):
            print("textrnn: dvc.yaml is not what the stages' imports give: run `textrnn dvc-yaml`", file=sys.stderr)
            return 1
        return 0
    print(f"wrote {dvc_yaml.write(repo)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from textrnn.lenient import clean_str
    from textrnn.predict import Prediction, Predictor
    from textrnn.predict_io import explain_column, read_lines, read_texts, write_predictions

    if args.texts:
        # Python hands undecodable argument bytes over as surrogates: such a text gets a bad_utf8 row.
        checked = [clean_str(text) for text in args.texts]
        texts, reasons = [t for t, _ in checked], [e or "" for _, e in checked]
    elif args.input:
        texts, reasons = read_texts(Path(args.input), args.text_column)
    else:
        texts, reasons = read_lines(sys.stdin.buffer)
    predictor = Predictor(args.model)
    predictions = predictor.predict(texts, batch_size=args.batch_size)
    # A row that could not even be read keeps that reason (e.g. bad_utf8) rather than "empty".
    predictions = [Prediction("", {}, r) if r else p for p, r in zip(predictions, reasons)]
    explained = explain_column(predictor, texts, predictions, args.explain) if args.explain else None
    if args.output:
        write_predictions(Path(args.output), texts, predictions, predictor.labels, explained)
    else:
        writer = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
        writer.writerow(["label", *[f"p_{name}" for name in predictor.labels], "reason",
                         *(["explain"] if explained else []), "text"])
        for i, (text, pred) in enumerate(zip(texts, predictions)):
            probs = [f"{pred.probabilities[n]:.4f}" if pred.probabilities else "" for n in predictor.labels]
            writer.writerow([pred.label, *probs, pred.reason, *([explained[i]] if explained else []), text])
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    params = load_from_args(args)
    set_local_state_defaults(Path.cwd())
    from textrnn_flows.serve import serve

    serve(params, params_file=args.params, profile=args.profile)
    return 0


def cmd_serve_model(args: argparse.Namespace) -> int:
    from textrnn.serving import serve
    from textrnn.serving_settings import settings_from_args

    try:
        settings = settings_from_args(args)
    except ValueError as err:
        print(f"textrnn: {err}", file=sys.stderr)
        return 2
    return serve(settings)


_COMMANDS = {"run": cmd_run, "stage": cmd_stage, "predict": cmd_predict, "serve": cmd_serve,
             "serve-model": cmd_serve_model, "dvc-yaml": cmd_dvc_yaml, "compare": cmd_compare}

if __name__ == "__main__":
    sys.exit(main())
