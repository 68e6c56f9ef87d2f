"""Prefect flows: wiring only (pipeline.py), schedules and deployments (serve.py)."""
