import os

import pytest

# never touch the user's cache or the network from tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIASCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MIASCALE_FASHION_MNIST_DIR", raising=False)
    monkeypatch.delenv("MIASCALE_WORDNET_DIR", raising=False)
