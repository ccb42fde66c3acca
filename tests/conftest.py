"""Shared test fixtures: where the real data lives (``../shared`` beside the repo, or $DEEPLAB_SHARED)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEPLAB_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} not found (set DEEPLAB_SHARED)")
    return DATA
