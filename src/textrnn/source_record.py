"""What ingest will read, recorded: each input file with its content hash (`data/source.json`), ingest's
input for DVC and for the flow's cache alike."""

from __future__ import annotations

import logging
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem

from textrnn.config import IngestParams
from textrnn.readers import builtin_corpus_dir
from textrnn.sources import BUILTIN, resolve_source

log = logging.getLogger(__name__)


def source_fingerprint(p: IngestParams, root: Path = Path(".")) -> dict[str, str]:
    """What the raw data is, for cache keys: each input file's md5 (local files) or the filesystem's own
    key for it (remote: size, mtime/ETag), so editing the data reruns ingest and everything after it.
    Relative paths are the project's at `root`."""
    from textrnn.io import file_md5

    if p.source == BUILTIN:
        corpus = builtin_corpus_dir()
        return {name: file_md5(corpus / name) for name in ("neg.txt", "pos.txt")}
    fs, files, _ = resolve_source(p, root)
    targets = sorted(f for path in files for f in (fs.find(path) if fs.isdir(path) else [path]))
    if isinstance(fs, LocalFileSystem):
        return {_portable(f, root): file_md5(f) for f in targets}
    return {f: fs.ukey(f) for f in targets}


def _portable(path: str, root: Path) -> str:
    """A local file inside the project folder by its relative path, so the record is the same in every
    clone of the project; a file outside it by its absolute path."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def record_source(out: Path, p: IngestParams, root: Path = Path(".")) -> dict:
    """Write what ingest will read — each input file with its content hash — to `out` (JSON), and return it.

    This is ingest's input for DVC and for the flow's cache alike: DVC cannot hash a glob, a URL's listing
    or a corpus inside a package, so dvc.yaml runs this step on every `dvc repro` (always_changed) and
    ingest depends on its output, which changes only when the data does."""
    from textrnn.io import read_json, write_json

    record = {"source": p.source, "files": source_fingerprint(p, root)}  # as written: the same in every clone
    if not (out.is_file() and read_json(out) == record):  # unchanged: leave the file (and its mtime) alone
        write_json(out, record)
    log.info("source: %d file(s) of %s", len(record["files"]), p.source)
    return record
