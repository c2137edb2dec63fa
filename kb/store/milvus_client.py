"""What the Milvus backend says to Milvus: the collection schema, the visibility/access filter,
row ↔ Chunk conversion, and one client per URI per process (Milvus Lite serves a .db file from a
thread of the first process that opens it; every reader and writer in that process shares it)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from kb.errors import StoreError
from kb.schema import Chunk

MAX_GEN = 2**62  # gen_to of a row no generation has replaced yet
MAX_TEXT = 65535  # bytes in a Milvus VARCHAR
MAX_DEPARTMENTS, MAX_DEPARTMENT = 256, 256  # array capacity, bytes per department name
CHUNK_FIELDS = [
    "row",
    "chunk_id",
    "source",
    "page",
    "headings",
    "span_start",
    "span_end",
    "hash",
    "text",
    "departments",
]
GET_BATCH = 1000

_clients: dict[str, MilvusClient] = {}
_lock = threading.Lock()


def resolve_uri(kb_dir: Path, uri: str) -> str:
    """ "" → the Milvus Lite file <kb_dir>/milvus.db; a URL as is; any other path made absolute."""
    if not uri:
        return str((kb_dir / "milvus.db").resolve())
    if "://" in uri:
        return uri
    return str(Path(uri).resolve())


def normalize_uri(kb_dir: Path, uri: str) -> str:
    """What the manifest records: "" for the default file (so the knowledge base can move), an
    absolute path for another local file, a URL as is."""
    resolved = resolve_uri(kb_dir, uri)
    return "" if resolved == resolve_uri(kb_dir, "") else resolved if "://" not in uri else uri


def client_for(uri: str) -> MilvusClient:
    with _lock:
        if uri not in _clients:
            local = "://" not in uri
            if local:
                # Milvus Lite lacks AllocTimestamp, which pymilvus calls while waiting for an index and
                # then does without; grpc's server logs that handled miss as an error.
                logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
                logging.getLogger("milvus_lite").setLevel(
                    logging.CRITICAL
                )  # its failures become our StoreError
            try:
                _clients[uri] = MilvusClient(uri)
            except MilvusException as e:
                hint = (
                    " (Milvus Lite serves a file to one process at a time: stop the other process, or "
                    "serve the file with `milvus-lite server` and use its http:// URI)"
                    if local
                    else ""
                )
                raise StoreError(f"cannot open Milvus at {uri}: {e.message}{hint}") from None
        return _clients[uri]


def index_type(uri: str, configured: str) -> str:
    return configured or ("FLAT" if "://" not in uri else "HNSW")


def search_params(index: str, k: int) -> dict[str, Any]:
    # HNSW's ef bounds the candidates it explores; below ~128 recall drops on 384-dim text embeddings.
    return {"metric_type": "IP", "params": {"ef": max(128, k)} if index == "HNSW" else {}}


def create_collection(client: MilvusClient, name: str, dim: int, index: str) -> None:
    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("row", DataType.INT64, is_primary=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("chunk_id", DataType.VARCHAR, max_length=512)
    s.add_field("source", DataType.VARCHAR, max_length=4096)
    s.add_field("page", DataType.INT64)  # -1 = none (nullable fields need Milvus ≥ 2.5)
    s.add_field("headings", DataType.VARCHAR, max_length=MAX_TEXT)  # JSON list
    s.add_field("span_start", DataType.INT64)
    s.add_field("span_end", DataType.INT64)
    s.add_field("hash", DataType.VARCHAR, max_length=512)
    s.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT)
    s.add_field(
        "departments",
        DataType.ARRAY,
        element_type=DataType.VARCHAR,
        max_capacity=MAX_DEPARTMENTS,
        max_length=MAX_DEPARTMENT,
    )
    s.add_field("access", DataType.VARCHAR, max_length=MAX_TEXT)  # "|hr|it|", "" = public: see visible_filter
    s.add_field("gen_from", DataType.INT64)
    s.add_field("gen_to", DataType.INT64)
    params = client.prepare_index_params()
    build = {"M": 16, "efConstruction": 200} if index == "HNSW" else {}
    params.add_index("vector", index_type=index, metric_type="IP", params=build)
    # Strong consistency: a search right after a commit sees the committed rows on a cluster too.
    client.create_collection(name, schema=s, index_params=params, consistency_level="Strong")


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _like_literal(s: str) -> str:
    """s inside a LIKE pattern, matching itself only (% and _ are wildcards there)."""
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def access_key(departments: list[str]) -> str:
    return "".join(f"|{d}" for d in sorted(departments)) + "|" if departments else ""


def is_lite(client: MilvusClient) -> bool:
    return str(client.get_server_version()).startswith("milvus_lite")


def visible_filter(generation: int, departments: frozenset[str] | None, array_ops: bool = True) -> str:
    """Rows of `generation` the user may see: public ones (no departments) or sharing one.

    Two spellings of the same test: array_contains_any on the `departments` array (what a Milvus
    server indexes), or LIKE on the `access` string. Milvus Lite evaluates array functions row by
    row in Python and LIKE vectorised (0.53 s against 0.07 s a search at 5,000 rows, measured with
    bench/milvus.py --lite-filters), so the store uses LIKE there and the array form on a server; the tests run both."""
    expr = f"gen_from <= {generation} and gen_to > {generation}"
    if departments is None:
        return expr
    public = "array_length(departments) == 0" if array_ops else 'access == ""'
    if not departments:
        return f"{expr} and {public}"
    names = sorted(departments)
    if array_ops:
        anyof = f"array_contains_any(departments, [{', '.join(_quote(d) for d in names)}])"
    else:
        anyof = " or ".join(f"access like {_quote('%|' + _like_literal(d) + '|%')}" for d in names)
    return f"{expr} and ({public} or {anyof})"


def row_entity(row: int, c: Chunk, vector: np.ndarray, generation: int) -> dict[str, Any]:
    headings = json.dumps(c.headings, ensure_ascii=False)
    for what, value in (("text", c.text), ("headings", headings)):
        if len(value.encode()) > MAX_TEXT:
            raise StoreError(
                f"{c.source}: chunk {what} over {MAX_TEXT} bytes, Milvus' limit (lower chunk.size)"
            )
    if len(c.departments) > MAX_DEPARTMENTS or any(len(d.encode()) > MAX_DEPARTMENT for d in c.departments):
        raise StoreError(
            f"{c.source}: over {MAX_DEPARTMENTS} departments or a name over {MAX_DEPARTMENT} bytes"
        )
    if any("|" in d for d in c.departments):
        raise StoreError(f"{c.source}: a department name contains '|', which the access filter reserves")
    return {
        "row": row,
        "vector": np.asarray(vector, np.float32).tolist(),
        "chunk_id": c.id,
        "source": c.source,
        "page": -1 if c.page is None else c.page,
        "headings": headings,
        "span_start": c.start,
        "span_end": c.end,
        "hash": c.hash,
        "text": c.text,
        "departments": sorted(c.departments),
        "access": access_key(c.departments),
        "gen_from": generation,
        "gen_to": MAX_GEN,
    }


def entity_to_chunk(e: dict[str, Any]) -> Chunk:
    return Chunk(
        id=e["chunk_id"],
        text=e["text"],
        source=e["source"],
        page=None if e["page"] < 0 else int(e["page"]),
        headings=json.loads(e["headings"]),
        start=int(e["span_start"]),
        end=int(e["span_end"]),
        hash=e["hash"],
        departments=list(e["departments"]),
    )


def fetch(
    client: MilvusClient, collection: str, rows: list[int], fields: list[str]
) -> list[tuple[int, dict]]:
    """(row, entity) for the rows that exist, by primary key, in batches."""
    out = []
    for i in range(0, len(rows), GET_BATCH):
        got = client.get(collection, ids=[int(r) for r in rows[i : i + GET_BATCH]], output_fields=fields)
        out.extend((int(e["row"]), dict(e)) for e in got)
    return out
