from __future__ import annotations

import pytest

from nearline.embed import Embedder, load_embedder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real local model, loaded once for the whole test session."""
    return load_embedder()
