# setup.py - builds the ethermem Python package: the C extension
# ethermem._ethermem over libethermem's public header, and the pure-Python
# ethermem and ethermem.torch modules.
#
# Where libethermem comes from:
#   ETHERMEM_BUILD_DIR  the CMake build directory (default: ../build), whose
#                       libethermem.so the extension links and finds at run
#                       time through an rpath to that directory;
#   ETHERMEM_LIB_DIR / ETHERMEM_INCLUDE_DIR  an installed library instead
#                       (e.g. /usr/local/lib and /usr/local/include).
# The rpath keeps the package a thin layer over the library it was built
# against: rebuilding libethermem in place updates the package too, and a
# moved or deleted build directory is an import error naming the library.
import os
import sys

from setuptools import Extension, setup

here = os.path.dirname(os.path.abspath(__file__))
build = os.path.abspath(os.environ.get("ETHERMEM_BUILD_DIR") or os.path.join(here, "..", "build"))
lib_dir = os.path.abspath(os.environ.get("ETHERMEM_LIB_DIR") or build)
inc_dir = os.path.abspath(os.environ.get("ETHERMEM_INCLUDE_DIR") or os.path.join(here, "..", "include"))

if not any(a in sys.argv for a in ("--help", "clean", "sdist", "egg_info")):
    if not os.path.exists(os.path.join(inc_dir, "ethermem.h")):
        sys.exit(f"ethermem.h not found in {inc_dir}: set ETHERMEM_INCLUDE_DIR")
    if not any(os.path.exists(os.path.join(lib_dir, f)) for f in ("libethermem.so", "libethermem.so.0")):
        sys.exit(f"libethermem.so not found in {lib_dir}: build it first "
                 "(cmake -S . -B build && cmake --build build) or set ETHERMEM_BUILD_DIR / ETHERMEM_LIB_DIR")

setup(
    name="ethermem",
    version="0.1.0",
    description="Pooled remote memory (ethermem) from Python: regions, zero-copy NumPy/PyTorch views, offload",
    packages=["ethermem"],
    package_data={"ethermem": ["*.pyi", "py.typed"]},
    ext_modules=[
        Extension(
            "ethermem._ethermem",
            # libemkv (the KV block store) is built on the public API only:
            # its source is compiled in, so it needs no library of its own.
            sources=[os.path.join("src", "_ethermem.c"), os.path.join("..", "src", "llm", "kvstore.c")],
            include_dirs=[inc_dir, os.path.join(here, "..", "src")],
            library_dirs=[lib_dir],
            libraries=["ethermem"],
            runtime_library_dirs=[lib_dir],
            extra_compile_args=["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
        )
    ],
    python_requires=">=3.10",
)
