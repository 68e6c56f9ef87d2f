"""The six pipeline stages, in order. Each module has one `run(...)`: paths in, paths out."""

# pyarrow imports pandas (~0.25 s of Python, holding the GIL) on its first conversion of a Python value:
# pa.array, a scalar argument to a compute function. Left to that, the import falls inside a stage's
# parallel phase, in whichever worker converts first, and stalls the others for longer than it takes
# (ingest of 200 MB with 2 workers: 1.24-1.47 s with the import beside it, 0.91-1.11 s without). Imported
# with the stages, it is part of a process's start, like the stages' other imports.
import pandas  # noqa: F401

STAGES = ("ingest", "clean", "vocab", "train", "evaluate", "export")
