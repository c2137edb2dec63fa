"""One typed configuration tree. Defaults live here and nowhere else.

Resolution order: these defaults ← `kb.yaml` (only the keys that change) ← `--set a.b=c` on the CLI.
Unknown keys and values of the wrong type are errors that name the key and the bad value.
Every run writes its resolved config beside its outputs (`Config.to_dict()` → YAML).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kb.errors import ConfigError


@dataclass
class ChunkConfig:
    size: int = 400  # characters: ~250 Chinese tokens for the embedder, well under its 512 limit
    overlap: int = 60  # characters repeated between neighbours so a split sentence is whole in one of them
    min_size: int = 10  # shorter pieces are merged into a neighbour or dropped

    def validate(self) -> None:
        if self.size < 50:
            raise ConfigError(f"chunk.size must be >= 50, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ConfigError(f"chunk.overlap must be in [0, chunk.size), got {self.overlap}")


@dataclass
class IngestConfig:
    suffixes: list[str] = field(
        default_factory=lambda: [".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".txt"]
    )
    max_file_mb: float = 50.0  # larger files are skipped with a message
    # Limits that bound the time and memory one hostile file can cost; over them the file is skipped.
    max_unpacked_mb: float = 200.0  # DOCX: declared uncompressed size of the zip (zip bombs)
    max_html_depth: int = 512  # HTML element nesting (real pages stay below ~100; parsing is recursive)
    max_pdf_pages: int = 5000  # pages read from one PDF (a few bytes each can declare millions)
    follow_symlinks: bool = False  # links pointing outside the ingested root are never followed
    keep_generations: int = 2  # committed generations kept on disk (the live one included)


@dataclass
class StoreConfig:
    backend: str = ""  # key of kb.store.STORES for a new knowledge base ("" = faiss); an existing one
    # keeps the backend its manifest names (`kb migrate --to milvus URI` moves it)
    uri: str = ""  # milvus: "" = Milvus Lite file <kb_dir>/milvus.db; a path ending .db, or http://host:19530
    collection: str = ""  # milvus: collection name prefix; "" = kb_<random id> for a new knowledge base,
    # so knowledge bases sharing a cluster never touch each other's collections
    index: str = ""  # milvus: vector index of a new collection; "" = FLAT (exact) on a Milvus Lite file,
    # HNSW on a server (measured recall in docs/scaling.md); any Milvus index type name otherwise


@dataclass
class EmbedderConfig:
    name: str = "e5-small"  # key of kb.embed.EMBEDDERS
    model: str = ""  # path or hub id, for embedders that take one (sentence-transformers)
    batch_size: int = 0  # texts per forward pass; 0 = the embedder's own default (e5-small 8, kb/embed/e5.py;
    # sentence-transformers 32)
    max_length: int = 512  # tokens; longer texts are truncated by the embedder
    threads: int = 0  # torch intra-op threads; 0 = torch's default. With workers > 1 each worker uses 1
    # e5-small: batches embedded at once by worker threads, each running torch on one core; 0 = one per
    # usable core (at most 16), 1 = one batch at a time on `threads` threads. The batches are the same
    # either way; float32 vectors equal to 1e-7, int8 ones as far as fbgemm's kernels round apart at
    # different thread counts (none on the 2-core machine; min cosine 0.9978 on a 16-core host).
    workers: int = 0
    # e5-small: int8 | none. int8 = dynamic int8 matmuls (FFN-output rows with outliers stay float32,
    # kb/embed/e5.py): first ingest of corpus/ 6.1-7.1 s against 9.3-13.6 s at float32 (bench/ingest.py, 5
    # runs), at a small retrieval cost: CMRC2018 hit@1 0.9733 -> 0.9708, hit@5 0.9957 -> 0.9944;
    # corpus/qa.jsonl hit@1 0.8488 and hit@5 0.9767 both (bench/README.md). Searching follows the precision
    # the index was built with (kb/service.py), so a float32 knowledge base keeps answering until
    # `kb ingest` rebuilds it at this precision.
    quantize: str = "int8"
    # e5-small: cpu | cuda | cuda:N. A GPU needs quantize=none (float32: the same vectors as on CPU, to
    # 1.3e-7 on an H200, so the same index name); bench/README.md has one H200 against the CPU workers.
    device: str = "cpu"


@dataclass
class IndexConfig:
    """The FAISS vector index (kb/store/faiss_index.py). Figures behind the defaults: bench/README.md."""

    type: str = "auto"  # auto | flat | ivf | hnsw; auto = flat up to flat_max chunks, `large` above
    flat_max: int = 20_000  # exact search reads every vector per query: p50 16 ms at 10k, 270 ms at 100k
    # on the shared 2-core machine (bench/results/query.json); ivf at 100k: a few ms
    large: str = "ivf"  # what auto picks above flat_max: ivf (updates in place) | hnsw
    ivf_nlist: int = 0  # k-means cells; 0 = 2*sqrt(chunks)
    ivf_nprobe: int = 48  # cells scanned per query: recall against speed
    ivf_train_iters: int = 10  # k-means iterations when (re)training
    retrain_growth: float = 2.0  # ivf is retrained when the chunk count moved by this factor since training
    hnsw_m: int = 32  # graph neighbours per node
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 96


@dataclass
class RetrievalConfig:
    k: int = 5  # hits returned to the prompt / `kb search`
    dense_k: int = 30  # candidates from the vector side before fusion
    keyword_k: int = 30  # candidates from BM25 before fusion
    rrf_k: int = 60  # reciprocal rank fusion constant (Cormack et al. 2009)
    dense_weight: float = 1.0
    keyword_weight: float = 1.0
    reranker: str = ""  # key of kb.rerank.RERANKERS; "" = no reranking
    reranker_model: str = ""


@dataclass
class GeneratorConfig:
    name: str = "hf"  # key of kb.generate.GENERATORS
    model: str = "bundled:qwen2.5-0.5b"  # bundled:<name>, a local path, a hub id, or modelscope:<id>
    adapter: str = ""  # adapter name in the registry, "" = the active one, "none" = base model
    max_new_tokens: int = 160
    temperature: float = 0.0  # 0 = greedy, reproducible answers
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    threads: int = 0


@dataclass
class AnswerConfig:
    max_context_chars: int = 1200  # sources beyond this are left out of the prompt (~2-3 chunks). The 0.5B
    # model answers better with fewer distractors (corpus/qa.jsonl, answers before refusal: 0.80 at 1200,
    # 0.77 at 1800, 0.78 at 2600; bench/refusal.py), and prefill dominates answer time on a CPU
    refuse_min_dense: float = 0.0  # refuse outright when the best cosine is below this (0 = off)
    min_support: float = 0.4  # share of the answer's new bigrams that must occur in the sources
    min_novel: int = 1  # an answer adding fewer new bigrams than this only restates the question ("3天"
    # adds one bigram and is an answer)
    min_alignment: float = 0.4  # IDF share of the question's words in the sentences the answer came from
    # Refuse an answer stating a number that no source shown (nor the question) holds (kb/grounding.py
    # unsupported_figures). Off by default: on the 11 stored generation sets of corpus/qa.jsonl it never
    # refused an answer containing the gold, and refused made-up figures ("约1000小时" to an unanswerable
    # question, "60 days" where the policy says 30), but refusal precision counts a refused wrong answer to
    # an answerable question as a false refusal: 0.8095 -> 0.7727 on the default set (bench/README.md).
    check_figures: bool = False
    # A refused answer to a quantity question is replaced by the source sentence holding a quantity of
    # the kind asked for and at least this alignment with the question (kb/fallback.py); 0 = off
    quote_min_alignment: float = 0.75
    support_check: bool = False  # also ask the model P(yes) that the sources answer (costs a second prefill)
    support_threshold: float = 0.5  # P(yes) below this → refuse


@dataclass
class GateConfig:
    """`kb finetune`'s promotion gate: a new adapter is activated only if, on every evaluation set, no
    metric below drops more than `tolerance` under the model answering now (the active adapter, or the
    base model). The sets: the synth validation split (validation_qa.jsonl beside the training data, else
    <kb_dir>/synth/) and `gold`. No set at all: the gate is skipped and says so."""

    enabled: bool = True
    gold: str = ""  # a QA JSONL gold set (the format kb eval reads); "" = none
    validation: bool = True  # also evaluate on the synth validation split when it exists
    metrics: list[str] = field(default_factory=lambda: ["answer.contains", "answer.f1", "refusal.recall"])
    tolerance: float = 0.02  # absolute drop allowed per metric (metrics are shares: one item in fifty)
    retrieval: bool = True  # answer with retrieval, as employees are served
    limit: int = 0  # first N items of each set (0 = all); each item costs one answer per model


@dataclass
class EvalConfig:
    judge: str = ""  # model judging faithfulness (as generator.model takes); "" = the lexical measure
    bootstrap: int = 1000  # resamples for the report's 95% confidence intervals
    seed: int = 0  # bootstrap seed: the same items give the same intervals
    gate: GateConfig = field(default_factory=GateConfig)

    def validate(self) -> None:
        from kb.eval.metrics import QUALITY_METRICS

        for m in self.gate.metrics:
            if m not in QUALITY_METRICS:
                raise ConfigError(
                    f"eval.gate.metrics: unknown metric {m!r} (known: {', '.join(QUALITY_METRICS)})"
                )
        if self.gate.tolerance < 0:
            raise ConfigError(f"eval.gate.tolerance must be >= 0, got {self.gate.tolerance}")
        if self.bootstrap < 1:
            raise ConfigError(f"eval.bootstrap must be >= 1, got {self.bootstrap}")


@dataclass
class AccessConfig:
    # Department tags by the top folder of a document's source (its path under the ingested root):
    # {finance: [finance]} restricts corpus/finance/** to the finance department. A `.kbaccess` file
    # in a folder overrides this for the folder and below (ingest/access.py). Untagged = public.
    folders: dict[str, list[str]] = field(default_factory=dict)
    users_file: str = ""  # YAML of users (kb/access.py); "" = no logins, the chat shows public documents
    require_login: bool = True  # with a users file, the chat asks for a login before answering

    def validate(self) -> None:
        from kb.access import norm_departments

        if not isinstance(self.folders, dict):
            raise ConfigError(f"access.folders: expected a mapping, got {self.folders!r}")
        for folder, deps in self.folders.items():
            if isinstance(deps, str):
                deps = [deps]
            if not isinstance(deps, list):
                raise ConfigError(f"access.folders.{folder}: expected a list of departments, got {deps!r}")
            self.folders[folder] = norm_departments(deps, f"access.folders.{folder}")


@dataclass
class Config:
    kb_dir: str = "kb_data"
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    access: AccessConfig = field(default_factory=AccessConfig)

    def validate(self) -> None:
        self.chunk.validate()
        self.eval.validate()
        self.access.validate()
        if self.retrieval.k < 1:
            raise ConfigError(f"retrieval.k must be >= 1, got {self.retrieval.k}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dump(self, path: str | os.PathLike) -> None:
        dump_yaml(self, path)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and, for strings from --set, convert) one value against its annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            if arm is type(None) and value is None:
                return None
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        for arm in arms:  # a value that already has one of the types is kept as it is
            base = typing.get_origin(arm) or arm
            if isinstance(base, type) and isinstance(value, base) and not isinstance(value, bool):
                return value
        return _coerce(value, arms[0], key)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, inner, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def apply_mapping(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    """Set the fields of dataclass `obj` from `data`, recursively; unknown keys and bad types raise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        path = prefix + str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {path!r} (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            apply_mapping(current, value, path + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping from a file; a missing file or bad YAML is a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def dump_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write a config dataclass as YAML (the resolved config every run leaves beside its outputs)."""
    Path(path).write_text(
        yaml.safe_dump(dataclasses.asdict(obj), allow_unicode=True, sort_keys=False), encoding="utf-8"
    )


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """['a.b=1', 'c=x'] → {'a': {'b': '1'}, 'c': 'x'}; values are coerced later by type."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
    return out


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    data: dict[str, Any] | None = None,
) -> Config:
    """Defaults ← YAML file (if given, or ./kb.yaml if present) ← data ← --set overrides."""
    cfg = Config()
    if path is None and Path("kb.yaml").exists():
        path = "kb.yaml"
    if path is not None:
        apply_mapping(cfg, read_yaml(path))
    if data:
        apply_mapping(cfg, data)
    if overrides:
        apply_mapping(cfg, parse_overrides(overrides))
    env_dir = os.environ.get("KB_DIR")
    if env_dir and not (overrides and any(o.startswith("kb_dir=") for o in overrides)):
        cfg.kb_dir = env_dir
    cfg.validate()
    return cfg
