"""Shared fixtures. External corpora are read from ``../shared/corpus``
relative to the project root; tests that need them skip (with the reason)
only when that folder is absent, which never happens in CI."""
import io
import os
import tarfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CORPUS = PROJECT_ROOT.parent / "shared" / "corpus"


def corpus_path(*parts):
    """Path inside the external corpus; skips the test when the corpus is absent
    outside CI and fails it in CI (CI must always have the corpus)."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"corpus path {path} missing in CI")
        pytest.skip(f"external corpus not found at {path} (see ../shared/corpus/README.md)")
    return path


@pytest.fixture
def corpus():
    return corpus_path()


def make_tar(files, fmt=tarfile.PAX_FORMAT, mtime=1_600_000_000):
    """A tar written by Python's tarfile: ``files`` is a list of (name,
    bytes), or (name, None) for a directory (mode 0755; files 0644)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
    return out.getvalue()
