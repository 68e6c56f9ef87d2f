"""The compiled kernels (Cython); everything else about the package is in pyproject.toml.

The extension is optional: where it cannot be compiled (no C compiler), the package installs without it
and `textrnn.kernels` uses its numpy/Arrow fallback, which predicts and serves (training needs the build)."""

import hashlib
import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

SOURCE = Path("src/textrnn/_kernels.pyx")
# Compiled into the module, so that importing a build older than the source fails (see textrnn.kernels).
SOURCE_MD5 = hashlib.md5(SOURCE.read_bytes()).hexdigest()

# TEXTRNN_KERNELS_BOUNDSCHECK=1 (`make test-boundscheck`) compiles every index checked, negative ones
# wrapped as in Python, into C files of its own, so the tests catch a loop that reads or writes out of
# bounds; the installed build leaves the checks out (each loop stays within what its caller allocated).
CHECKED = os.environ.get("TEXTRNN_KERNELS_BOUNDSCHECK", "") not in ("", "0")
DIRECTIVES = {"language_level": 3, "boundscheck": CHECKED, "wraparound": CHECKED, "initializedcheck": CHECKED,
              "cdivision": True}

kernels = Extension("textrnn._kernels", [str(SOURCE)], extra_compile_args=["-O3"],
                    define_macros=[("TEXTRNN_KERNELS_SOURCE_MD5", f'"{SOURCE_MD5}"'),
                                   ("TEXTRNN_KERNELS_BOUNDSCHECK", str(int(CHECKED)))], optional=not CHECKED)
extensions = cythonize([kernels], compiler_directives=DIRECTIVES, build_dir="build/boundscheck-c" if CHECKED else None)
for extension in extensions:
    extension.optional = not CHECKED  # cythonize builds new Extension objects without the flag
setup(ext_modules=extensions)
