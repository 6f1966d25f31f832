"""Shared fixtures. External corpora are read from ``../shared/corpus``
relative to the project root; tests that need them skip (with the reason)
only when that folder is absent, which never happens in CI."""
import os
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
