"""The compiled kernels (Cython); everything else about the package is in pyproject.toml.

The extension is optional: where it cannot be compiled (no C compiler), the package installs without it
and `textrnn.kernels` uses its numpy/Arrow fallback, which predicts and serves (training needs the build)."""

import hashlib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

SOURCE = Path("src/textrnn/_kernels.pyx")
# Compiled into the module, so that importing a build older than the source fails (see textrnn.kernels).
SOURCE_MD5 = hashlib.md5(SOURCE.read_bytes()).hexdigest()

kernels = Extension("textrnn._kernels", [str(SOURCE)], extra_compile_args=["-O3"],
                    define_macros=[("TEXTRNN_KERNELS_SOURCE_MD5", f'"{SOURCE_MD5}"')], optional=True)
extensions = cythonize([kernels], compiler_directives={"language_level": 3})
for extension in extensions:
    extension.optional = True  # cythonize builds new Extension objects without the flag
setup(ext_modules=extensions)
