"""The six pipeline stages, in order. Each module has one `run(...)`: paths in, paths out."""

# pyarrow imports pandas (Python code, holding the GIL) on its first conversion of a Python value:
# pa.array, a scalar argument to a compute function. Left to that, the import falls inside a stage's
# parallel phase, in whichever worker converts first, and stalls the others for longer than it takes.
# Imported with the stages, it is part of a process's start, like the stages' other imports.
import pandas  # noqa: F401

STAGES = ("ingest", "clean", "vocab", "train", "evaluate", "export")
