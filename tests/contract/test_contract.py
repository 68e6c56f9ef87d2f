"""dvc.yaml, params.yaml, the config dataclasses and textrnn.pipeline agree; src/textrnn imports no prefect."""

from __future__ import annotations

import ast
import dataclasses
import re
import tomllib
from pathlib import Path

import yaml

from textrnn import dvc_yaml
from textrnn.config import SECTIONS, Params
from textrnn.pipeline import STAGE_SPECS, code_files
from textrnn.stages import STAGES

REPO = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _path_refs(entries: list) -> list[str]:
    """`${paths.x}` entries of a dvc.yaml list (plain strings or single-key mappings) → ['x', ...]."""
    names = [e if isinstance(e, str) else next(iter(e)) for e in entries]
    return [m.group(1) for n in names if (m := re.match(r"\$\{paths\.(\w+)\}(/|$)", n))]


def test_the_six_stages_have_one_name_everywhere():
    assert STAGES == ("ingest", "clean", "vocab", "train", "evaluate", "export")
    assert tuple(DVC["stages"]) == ("source", *STAGES)  # source: ingest's input files, recorded first
    assert tuple(STAGE_SPECS) == STAGES
    for name in STAGES:
        assert (REPO / "src" / "textrnn" / "stages" / f"{name}.py").is_file()
        assert (REPO / "tasks" / f"{name}.py").is_file()
    for name in DVC["stages"]:
        assert DVC["stages"][name]["cmd"] == f"PYTHONPATH=src python -m textrnn stage {name}"


def test_dvc_yaml_is_generated_from_the_stage_table_and_imports():
    assert not dvc_yaml.differs(REPO), "dvc.yaml is stale: run `textrnn dvc-yaml`"


def test_dvc_params_match_the_sections_each_stage_reads():
    for name, spec in STAGE_SPECS.items():
        assert tuple(DVC["stages"][name]["params"]) == spec.sections, name


def test_dvc_deps_are_the_stage_inputs_and_its_import_closure():
    for name, spec in STAGE_SPECS.items():
        deps = DVC["stages"][name]["deps"]
        assert _path_refs(deps) == list(spec.deps), name
        code = sorted(d for d in deps if d.startswith("src/"))
        expected = sorted(str(f.relative_to(REPO)) for f in code_files(name))
        assert code == expected, name


def test_every_module_a_stage_imports_is_among_its_code_deps():
    """What the closure is checked against: the textrnn modules a real run of the stage's module loads.
    Names come from sys.modules' keys: some entries are not modules (Cython's pure-Python shim registers
    a `cython.parallel` object without `__name__`)."""
    import subprocess
    import sys

    for name in STAGE_SPECS:
        probe = (f"import sys, textrnn.pipeline, textrnn.stages.{name}; "
                 "print('\\n'.join(m.__file__ for n, m in list(sys.modules.items()) "
                 "if n.startswith('textrnn') and getattr(m, '__file__', None)))")
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, f"importing textrnn.stages.{name} failed:\n{done.stderr}"
        loaded = done.stdout.split()
        declared = {f.resolve() for f in code_files(name)}
        for path in loaded:
            module = Path(path).resolve()
            if module.suffix == ".so":  # the build of _kernels.pyx
                module = module.parent / "_kernels.pyx"
            assert module in declared, f"{name} runs {module} but its code deps miss it"


def test_dvc_outs_are_the_stage_outputs():
    for name, spec in STAGE_SPECS.items():
        stage = DVC["stages"][name]
        declared = [*_path_refs(stage.get("outs", [])), *_path_refs(stage.get("metrics", [])),
                    *_path_refs(stage.get("plots", []))]
        assert sorted(set(declared)) == sorted(spec.outs), name


def test_every_input_is_an_output_of_an_earlier_stage():
    produced: set[str] = {"source"}  # the source step's record, before ingest
    for spec in STAGE_SPECS.values():
        assert set(spec.deps) <= produced, f"{spec.name} reads {set(spec.deps) - produced} before it is written"
        produced |= set(spec.outs)


def test_params_yaml_sections_and_keys_match_the_dataclasses():
    assert set(PARAMS) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        fields = {f.name for f in dataclasses.fields(Params.__dataclass_fields__[name].default_factory())}
        assert set(PARAMS[name]) == fields, f"params.yaml [{name}] and {cls} differ"


def test_every_key_of_every_profile_is_a_key_of_params_yaml():
    """Profiles are overlays holding only the values that differ; a key params.yaml lacks is a typo or a
    setting that was renamed."""
    profiles = sorted((REPO / "tests" / "profiles").glob("*.yaml"))
    assert profiles
    for profile in profiles:
        overlay = yaml.safe_load(profile.read_text(encoding="utf-8"))
        assert set(overlay) <= set(PARAMS), profile.name
        for section, values in overlay.items():
            assert set(values) <= set(PARAMS[section]), f"{profile.name} [{section}]"
            unchanged = sorted(k for k, v in values.items() if PARAMS[section][k] == v)
            assert not unchanged, f"{profile.name} [{section}] repeats params.yaml's {unchanged}: drop them"


def test_every_path_in_params_is_used_by_a_stage():
    used = {key for spec in STAGE_SPECS.values() for key in (*spec.deps, *spec.outs)}
    assert set(PARAMS["paths"]) - used == {"train_state"}  # resumable state, deliberately not a DVC output


def test_src_textrnn_imports_no_prefect():
    for path in (REPO / "src" / "textrnn").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "prefect" or n.startswith("prefect.") for n in names), path


def test_the_prefect_layers_install_under_names_of_their_own():
    """tasks/ and flows/ install as textrnn_tasks and textrnn_flows: top-level `tasks` or `flows` in
    site-packages would collide with any other package (or a user's folder) of that name."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert {name.split(".")[0] for name in setuptools["packages"]} == {"textrnn", "textrnn_tasks", "textrnn_flows"}
    assert setuptools["package-dir"] == {"": "src", "textrnn_tasks": "tasks", "textrnn_flows": "flows"}
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "tasks").rglob("*.py"), *(REPO / "flows").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("tasks", "flows") for n in names), path


def test_no_pickle_on_load_paths():
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "tasks").rglob("*.py"), *(REPO / "flows").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "pickle.load" not in text, path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
