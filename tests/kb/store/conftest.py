"""Fixtures for the store conformance suite. Every test taking `store_cfg` (or `backend`) runs on
FAISS + SQLite, on a Milvus Lite file, and on a Milvus server over gRPC (`milvus-lite server` in a
subprocess: the code path a cluster URI takes, with the HNSW index a server gets by default)."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import time

import pytest

from kb.config import StoreConfig

try:
    import milvus_lite  # noqa: F401
    import pymilvus  # noqa: F401

    MILVUS_MISSING = ""
except ImportError as e:  # the only reason to skip: the optional packages cannot be imported
    MILVUS_MISSING = f"pymilvus/milvus-lite cannot be imported ({e}): pip install -e '.[milvus]'"
needs_milvus = pytest.mark.skipif(bool(MILVUS_MISSING), reason=MILVUS_MISSING)
_names = itertools.count()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path_factory.mktemp("milvus-server") / "server.db"
    cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"`{' '.join(cmd)}` did not start")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(20)


@pytest.fixture(
    params=[
        "faiss",
        pytest.param("milvus", marks=needs_milvus),
        pytest.param("milvus-server", marks=needs_milvus),
    ]
)
def store_cfg(request) -> StoreConfig:
    if request.param == "milvus-server":
        uri = request.getfixturevalue("milvus_server")
        return StoreConfig(backend="milvus", uri=uri, collection=f"t{next(_names)}")  # one prefix per test
    return StoreConfig(backend=request.param)


@pytest.fixture
def backend(store_cfg: StoreConfig) -> str:
    return store_cfg.backend
