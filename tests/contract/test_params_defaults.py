"""params.yaml (what users run) and the config dataclasses' defaults say the same, so they cannot drift."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from textrnn.config import Params, load_params

PARAMS_YAML = Path(__file__).resolve().parents[2] / "params.yaml"


def _differences(loaded: Params, defaults: Params) -> list[str]:
    """`section.key: params.yaml X, config.py Y` for every value that differs."""
    found = []
    for section in dataclasses.fields(Params):
        in_yaml, in_code = getattr(loaded, section.name), getattr(defaults, section.name)
        for key in dataclasses.fields(in_code):
            a, b = getattr(in_yaml, key.name), getattr(in_code, key.name)
            if a != b or type(a) is not type(b):
                found.append(f"{section.name}.{key.name}: params.yaml {a!r}, config.py {b!r}")
    return found


def test_params_yaml_equals_the_dataclass_defaults():
    loaded = load_params(PARAMS_YAML)
    assert _differences(loaded, Params()) == []
    assert loaded == Params()


def test_the_check_names_a_drifted_value():
    defaults = Params()
    seed, epochs = defaults.clean.split_seed + 1, defaults.train.epochs + 1
    drifted = load_params(PARAMS_YAML, {"clean.split_seed": seed, "train.epochs": epochs})
    assert _differences(drifted, defaults) == [
        f"clean.split_seed: params.yaml {seed}, config.py {defaults.clean.split_seed}",
        f"train.epochs: params.yaml {epochs}, config.py {defaults.train.epochs}",
    ]
