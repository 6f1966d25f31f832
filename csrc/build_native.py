"""cffi (API mode, out-of-line) builder for ``layerstore._native``.

Every ``csrc/*.c`` file is compiled into one extension module; the declarations
visible to Python are the concatenation of the ``csrc/*.cdef`` files (cffi's
C-declaration subset: no preprocessor beyond integer ``#define`` constants).
Each C module owns its ``.c``, ``.h`` and ``.cdef`` trio.

Extra compiler flags can be appended with ``LAYERSTORE_CFLAGS`` (for example
``-fsanitize=address,undefined -fno-omit-frame-pointer``) and linker flags with
``LAYERSTORE_LDFLAGS``.
"""
import os
import shlex
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


def _sources():
    # Relative paths keep setuptools happy; the build runs from the project root.
    root = HERE.parent
    return sorted(str(p.relative_to(root)) for p in HERE.glob("*.c"))


def _cdefs():
    return "\n".join(p.read_text() for p in sorted(HERE.glob("*.cdef")))


def _headers():
    return "\n".join(f'#include "{p.name}"' for p in sorted(HERE.glob("*.h")))


ffibuilder = FFI()
ffibuilder.cdef(_cdefs())
ffibuilder.set_source(
    "layerstore._native",
    _headers(),
    sources=_sources(),
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"]
    + shlex.split(os.environ.get("LAYERSTORE_CFLAGS", "")),
    extra_link_args=["-pthread"] + shlex.split(os.environ.get("LAYERSTORE_LDFLAGS", "")),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
