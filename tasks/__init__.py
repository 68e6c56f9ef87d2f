"""Prefect tasks: one per stage, a few lines each. Caching, retries and timeouts are declared here."""
