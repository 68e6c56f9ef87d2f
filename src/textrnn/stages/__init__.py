"""The six pipeline stages, in order. Each module has one `run(...)`: paths in, paths out."""

STAGES = ("ingest", "clean", "vocab", "train", "evaluate", "export")
