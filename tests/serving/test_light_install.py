"""The light installation: `pip install .` in a clean virtual environment, without the `train` extra and
without a C compiler, predicts and serves; torch is not importable there."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from textrnn.predict import Predictor
from textrnn.serving import prediction_json

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["这本书太好了，非常喜欢", "质量太差，不推荐", ""]


def _source_copy(target: Path) -> Path:
    """The project's files as a fresh clone has them (tracked and not ignored), no build outputs."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


@pytest.fixture(scope="module")
def light_env(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("light")
    source = _source_copy(root / "src")
    venv.create(root / "venv", with_pip=True)
    python = root / "venv" / "bin" / "python"
    # CC=false: the compiler fails, as on a machine without one; the optional extension is skipped.
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(source)], check=True, timeout=1200,
                   env={**os.environ, "CC": "false", "CXX": "false"})
    return python


@pytest.mark.slow
def test_the_light_install_has_no_torch_no_compiled_kernels_and_a_clean_dependency_set(light_env):
    for module in ("torch", "prefect", "dvc", "pandas", "sklearn", "textrnn._kernels"):
        probe = subprocess.run([str(light_env), "-c", f"import {module}"], capture_output=True, text=True)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module
    subprocess.run([str(light_env), "-m", "pip", "check"], check=True, capture_output=True)


@pytest.mark.slow
def test_the_light_install_predicts_like_the_full_one(light_env, bundle):
    run = subprocess.run([str(light_env.with_name("textrnn")), "predict", "--model", str(bundle), *TEXTS],
                         capture_output=True, text=True, check=True, timeout=120)
    rows = list(csv.DictReader(io.StringIO(run.stdout), delimiter="\t"))
    want = Predictor(bundle).predict(TEXTS)
    assert [row["label"] for row in rows] == [p.label for p in want]
    assert [row["reason"] for row in rows] == [p.reason for p in want] == ["", "", "empty"]


@pytest.mark.slow
def test_the_light_install_serves(light_env, bundle, servers, tmp_path):
    server = servers(bundle, tmp_path / "server.log", python=str(light_env), env={"TEXTRNN_PURE": ""})
    status, answer = server.predict({"texts": TEXTS})
    assert status == 200
    want = [prediction_json(p) for p in Predictor(bundle).predict(TEXTS)]
    assert [row["label"] for row in answer["predictions"]] == [row["label"] for row in want]
    for got, expected in zip(answer["predictions"], want):
        if expected["probabilities"]:
            assert got["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)
