"""Stage code as an import closure: every way a module is reached counts, lazy attributes do not."""

from __future__ import annotations

from pathlib import Path

from textrnn.codedeps import closure, imported_modules, module_file, stage_code


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "textrnn"
    for rel, text in {"__init__.py": "", **files}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text, encoding="utf-8")
    return pkg


def test_module_level_function_level_and_named_modules_are_followed(tmp_path):
    pkg = _package(tmp_path, {
        "stages/__init__.py": "",
        "stages/a.py": "from textrnn import b\n\ndef f():\n    from textrnn.c import thing\n"
                       "    return ['-m', 'textrnn.d']\n",
        "b.py": "import textrnn.e\n",
        "c.py": "",
        "d.py": "",
        "e.py": "from textrnn import _fast\n",
        "_fast.pyx": "def g(): pass\n",
        "unused.py": "",
    })
    found = {p.relative_to(pkg).as_posix() for p in closure([pkg / "stages" / "a.py"], pkg)}
    assert found == {"__init__.py", "stages/__init__.py", "stages/a.py", "b.py", "c.py", "d.py", "e.py", "_fast.pyx"}


def test_lazy_package_attributes_are_not_followed(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "def __getattr__(name):\n    from textrnn.heavy import Thing\n    return Thing\n",
        "heavy.py": "",
        "light.py": "",
    })
    assert imported_modules(pkg / "__init__.py", pkg) == set()
    assert module_file("textrnn.heavy", pkg) == pkg / "heavy.py"


def test_unread_files_count_without_their_imports(tmp_path):
    pkg = _package(tmp_path, {"pipeline.py": "from textrnn import other\n", "other.py": "", "root.py": ""})
    found = closure([pkg / "root.py"], pkg, unread=[pkg / "pipeline.py"])
    assert pkg / "pipeline.py" in found and pkg / "other.py" not in found


def test_the_real_stages_include_what_they_import_and_nothing_of_other_stages():
    assert {"vocab.py", "data.py", "predict.py", "normalisation.py", "tokenisation.py", "kernels.py",
            "_kernels.pyx"} <= set(stage_code("export"))
    assert "vocab.py" in stage_code("train") and "ddp_train.py" in stage_code("train")
    assert {"cleaning.py", "parallel.py"} <= set(stage_code("vocab"))
    assert not any(f.startswith("stages/") and f not in ("stages/__init__.py", "stages/ingest.py")
                   for f in stage_code("ingest"))
    assert "training.py" not in stage_code("ingest")
