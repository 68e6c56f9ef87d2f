"""The model server's settings and their command-line options (`textrnn serve-model`).

Kept apart from `textrnn.serving` so that building the CLI's parser imports no web stack.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerSettings:
    model: Path  # the exported bundle folder (or a symlink to it)
    host: str = "127.0.0.1"  # loopback unless told otherwise: the API has no authentication
    port: int = 8000  # 0: any free port (the log line "listening on" names it)
    batch_window_ms: float = 2.0  # how long the batcher waits for more requests after the first
    max_batch_rows: int = 256  # a batch closes early once it holds this many texts
    max_texts: int = 256  # texts per request; more get 413
    max_bytes: int = 1 << 20  # request body bytes; more get 413
    # Rows per onnxruntime call inside a batch (Predictor.predict's batch_size; its rows sorted by length):
    # small calls pad little, and the recurrent model's cost per row grows with the padding.
    batch_size: int = 8
    threads: int = 0  # onnxruntime intra-op threads (0: its default, one per core)
    watch_s: float = 0.0  # poll the bundle for a new export every this many seconds (0: SIGHUP only)

    def __post_init__(self):
        positive = {"max_batch_rows": self.max_batch_rows, "max_texts": self.max_texts,
                    "max_bytes": self.max_bytes, "batch_size": self.batch_size}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"serve-model: {name} must be at least 1, got {value}")
        if self.batch_window_ms < 0 or self.watch_s < 0 or self.threads < 0:
            raise ValueError("serve-model: batch_window_ms, watch_s and threads must not be negative")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"serve-model: port must be 0-65535, got {self.port}")


# (option, setting, type, help): every setting but the model folder, with its default from ServerSettings.
_OPTIONS = [
    ("--host", "host", str, "address to bind (default: %(default)s, this machine only)"),
    ("--port", "port", int, "port (default: %(default)s; 0: any free one)"),
    ("--batch-window-ms", "batch_window_ms", float,
     "wait this long for concurrent requests to batch together (default: %(default)s)"),
    ("--max-batch-rows", "max_batch_rows", int, "texts per batch at most (default: %(default)s)"),
    ("--max-texts", "max_texts", int, "texts per request at most (default: %(default)s)"),
    ("--max-bytes", "max_bytes", int, "request body bytes at most (default: %(default)s)"),
    ("--batch-size", "batch_size", int, "rows per onnxruntime call (default: %(default)s)"),
    ("--threads", "threads", int, "onnxruntime intra-op threads (default: %(default)s = one per core)"),
    ("--watch", "watch_s", float, "check the bundle for a new export every this many seconds and swap it in "
                                  "(default: %(default)s = off; SIGHUP always reloads)"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServerSettings(model=Path("models/export"))
    parser.add_argument("--model", default=str(defaults.model), help="exported bundle folder (default: %(default)s)")
    for option, setting, kind, text in _OPTIONS:
        parser.add_argument(option, dest=setting, type=kind, default=getattr(defaults, setting), help=text)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings(model=Path(args.model), **{setting: getattr(args, setting) for _, setting, _, _ in _OPTIONS})
