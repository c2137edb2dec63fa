"""Fixtures for the store conformance suite: every test taking `backend` runs on FAISS and Milvus Lite."""

from __future__ import annotations

import importlib.util

import pytest

from kb.config import StoreConfig

MILVUS_MISSING = (
    importlib.util.find_spec("milvus_lite") is None or importlib.util.find_spec("pymilvus") is None
)


@pytest.fixture(
    params=[
        "faiss",
        pytest.param(
            "milvus",
            marks=pytest.mark.skipif(
                MILVUS_MISSING, reason="pymilvus/milvus-lite not installed: pip install -e '.[milvus]'"
            ),
        ),
    ]
)
def backend(request) -> str:
    return request.param


@pytest.fixture
def store_cfg(backend: str) -> StoreConfig:
    return StoreConfig(backend=backend)
