"""The clean stage's chunk work on a real Dask cluster (LocalCluster, 2 worker processes) gives output
byte-identical to a local run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from distributed import LocalCluster

from textrnn.config import RunnerParams
from textrnn.io import content_hash
from textrnn.pipeline import run_stage


def test_clean_through_a_dask_cluster_matches_the_local_run(tiny_params, tmp_path):
    local = dataclasses.replace(tiny_params, ingest=dataclasses.replace(tiny_params.ingest, chunk_rows=100))
    run_stage("ingest", local)
    run_stage("clean", local)
    remote_paths = dataclasses.replace(local.paths, clean=str(tmp_path / "dask" / "clean"),
                                       rejects=str(tmp_path / "dask" / "rejects"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        runner = RunnerParams(dask_address=cluster.scheduler_address)
        remote = dataclasses.replace(local, paths=remote_paths, runner=runner)
        stats = run_stage("clean", remote)
    assert len(list(Path(local.paths.raw).glob("part-*.parquet"))) > 2  # several chunks went to the workers
    assert stats["accounting_ok"]
    assert content_hash(remote_paths.clean) == content_hash(local.paths.clean)
    assert content_hash(remote_paths.rejects) == content_hash(local.paths.rejects)
