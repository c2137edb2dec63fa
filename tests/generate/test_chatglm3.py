"""ChatGLM3 → transformers GLM conversion, checked against ChatGLM3's own math and tokenization.

`chatglm3_logits` re-implements the forward pass of THUDM's modeling_chatglm.py (ChatGLM3-6B): seq-first
tensors, query_key_value split into q / k / v groups, apply_rotary_pos_emb on the first half of each
head in interleaved pairs, multi-query expand, swiglu = silu(first half) * second half, final RMSNorm,
output_layer. It runs on a tiny random checkpoint written in ChatGLM3's key layout, which the converter
turns into a GlmForCausalLM folder. `chatglm3_chat_ids` / `chatglm3_decode` follow tokenization_chatglm.py
(SPTokenizer + build_single_message / build_chat_input) over a SentencePiece model trained here.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from kb.errors import ModelError
from kb.generate import chatglm3 as cg
from kb.generate.chatglm3_tokenizer import SPECIAL_TOKENS, convert_tokenizer

WORDS = (
    "the quick brown fox jumps over lazy dog vacation policy leave days expense report travel budget "
    "meeting people isotope hello world 年假 病假 员工 报销 差旅 预算 会议 公司 制度 你好 我们 请问 几天"
).split()
TINY = {
    "model_type": "chatglm", "architectures": ["ChatGLMModel"], "num_layers": 2, "hidden_size": 64,
    "num_attention_heads": 4, "kv_channels": 16, "multi_query_attention": True, "multi_query_group_num": 2,
    "ffn_hidden_size": 96, "padded_vocab_size": 352, "seq_length": 128, "layernorm_epsilon": 1e-5,
    "rmsnorm": True, "post_layer_norm": True, "apply_residual_connection_post_layernorm": False,
    "add_qkv_bias": True, "add_bias_linear": False, "original_rope": True, "tie_word_embeddings": False,
    "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32", "pre_seq_len": None,
}  # fmt: skip


def train_sp(model_type: str, user_defined: tuple[str, ...] = ()) -> bytes:
    """A tiny SentencePiece model like ChatGLM3's: byte fallback (so "\\n" is <0x0A>, as ChatGLM3's
    id 13), dummy prefix, no whitespace folding. Byte fallback needs 256 pieces: vocab ~330, not ~200."""
    rnd = random.Random(0)
    lines = [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12))) for _ in range(400)]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, vocab_size=330, hard_vocab_limit=False,
        model_type=model_type, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, character_coverage=1.0, minloglevel=2,
        user_defined_symbols=list(user_defined),
    )  # fmt: skip
    return out.getvalue()


@pytest.fixture(scope="module")
def sp_models() -> dict[str, bytes]:
    return {"bpe": train_sp("bpe"), "unigram": train_sp("unigram"), "collide": train_sp("bpe", ("sop",))}


def random_weights(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in ChatGLM3's key layout, shapes from the config (as modeling_chatglm.py builds it)."""
    g = torch.Generator().manual_seed(seed)
    d = cg._dims(Path("."), cfg)
    shapes = cg.expected_shapes(d, qkv_bias=cfg["add_qkv_bias"])
    sd = {k: torch.randn(s, generator=g) * (0.1 if len(s) == 1 else 0.2) for k, s in shapes.items()}
    for k in sd:
        if k.endswith("layernorm.weight"):
            sd[k] += 1.0  # norms near 1, as trained ones are
    # The rotary buffer ChatGLM3 saves: RotaryEmbedding(kv_channels // 2).inv_freq.
    sd[cg._INV_FREQ] = 1.0 / (
        10000 ** (torch.arange(0, d["head_dim"] // 2, 2).float() / (d["head_dim"] // 2))
    )
    return sd


def write_checkpoint(root: Path, cfg: dict, sd: dict, sp_model: bytes, fmt: str = "safetensors") -> Path:
    """Two shards plus an index, like the release's seven."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (root / "tokenizer.model").write_bytes(sp_model)
    keys = sorted(sd)
    ext, index = (
        (".safetensors", "model.safetensors") if fmt == "safetensors" else (".bin", "pytorch_model.bin")
    )
    weight_map = {}
    for i, part in enumerate((keys[::2], keys[1::2]), 1):
        name = f"{index.split('.')[0]}-{i:05d}-of-00002{ext}"
        tensors = {k: sd[k].clone() for k in part}
        save_file(tensors, str(root / name)) if fmt == "safetensors" else torch.save(tensors, root / name)
        weight_map |= dict.fromkeys(part, name)
    (root / f"{index}.index.json").write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")
    return root


def chatglm3_logits(sd: dict, cfg: dict, ids: torch.Tensor) -> torch.Tensor:
    """ChatGLM3's forward pass (modeling_chatglm.py), eval mode, no cache: (batch, seq) → (batch, seq, vocab)."""
    b, s = ids.shape
    nh, hd, L = cfg["num_attention_heads"], cfg["kv_channels"], cfg["num_layers"]
    ng = cfg["multi_query_group_num"] if cfg["multi_query_attention"] else nh
    eps = cfg["layernorm_epsilon"]

    def rms(x, w):  # RMSNorm
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    # RotaryEmbedding(kv_channels // 2).forward_impl: cache [s, hd/4, 2] of (cos, sin)
    n_elem, base = hd // 2, 10000 * cfg.get("rope_ratio", 1)
    theta = 1.0 / (base ** (torch.arange(0, n_elem, 2, dtype=torch.float) / n_elem))
    idx_theta = torch.outer(torch.arange(s, dtype=torch.float), theta)
    cache = torch.stack([torch.cos(idx_theta), torch.sin(idx_theta)], dim=-1)

    def rope(x):  # apply_rotary_pos_emb, x: [sq, b, np, hn]
        rot_dim = cache.shape[-2] * 2
        x, x_pass = x[..., :rot_dim], x[..., rot_dim:]
        xs = x.reshape(s, -1, x.size(2), rot_dim // 2, 2)
        rc = cache.view(s, 1, 1, xs.size(3), 2)
        x0, x1, cos, sin = xs[..., 0], xs[..., 1], rc[..., 0], rc[..., 1]
        out = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], -1).flatten(3)
        return torch.cat((out, x_pass), dim=-1)

    h = sd["transformer.embedding.word_embeddings.weight"][ids].transpose(0, 1)  # [s, b, H]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    for i in range(L):
        p = f"transformer.encoder.layers.{i}."
        x = rms(h, sd[p + "input_layernorm.weight"])
        mixed = (
            x @ sd[p + "self_attention.query_key_value.weight"].T
            + sd[p + "self_attention.query_key_value.bias"]
        )
        if cfg["multi_query_attention"]:
            q, k, v = mixed.split([nh * hd, ng * hd, ng * hd], dim=-1)
            q, k, v = q.view(s, b, nh, hd), k.view(s, b, ng, hd), v.view(s, b, ng, hd)
        else:
            q, k, v = mixed.view(s, b, nh, 3 * hd).split(hd, dim=-1)
        q, k = rope(q), rope(k)
        k = k.unsqueeze(-2).expand(-1, -1, -1, nh // ng, -1).reshape(s, b, nh, hd)
        v = v.unsqueeze(-2).expand(-1, -1, -1, nh // ng, -1).reshape(s, b, nh, hd)
        q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))  # [b, np, s, hn]
        scores = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~causal, float("-inf"))
        ctx = (scores.softmax(-1) @ v).permute(2, 0, 1, 3).reshape(s, b, nh * hd)
        h = h + ctx @ sd[p + "self_attention.dense.weight"].T
        x = rms(h, sd[p + "post_attention_layernorm.weight"])
        x0, x1 = (x @ sd[p + "mlp.dense_h_to_4h.weight"].T).chunk(2, dim=-1)
        h = h + (F.silu(x0) * x1) @ sd[p + "mlp.dense_4h_to_h.weight"].T
    h = rms(h, sd["transformer.encoder.final_layernorm.weight"])
    return (h @ sd["transformer.output_layer.weight"].T).transpose(0, 1)


def load_glm(out: Path):
    from transformers import AutoModelForCausalLM, GlmForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model) is GlmForCausalLM
    return model


@pytest.mark.parametrize(
    "fmt,changes",
    [("safetensors", {}), ("bin", {}), ("safetensors", {"multi_query_attention": False}),
     ("safetensors", {"rope_ratio": 50.0})],
    ids=["safetensors", "pytorch-bin", "no-mqa", "rope-ratio"],
)  # fmt: skip
def test_logits_match_chatglm3_reference(tmp_path, sp_models, fmt, changes):
    cfg = TINY | changes
    sd = random_weights(cfg)
    src = write_checkpoint(tmp_path / "src", cfg, sd, sp_models["bpe"], fmt)
    out = cg.convert_chatglm3(src, tmp_path / "out")
    model = load_glm(out)
    ids = torch.randint(0, cfg["padded_vocab_size"], (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model(ids).logits, chatglm3_logits(sd, cfg, ids)
    diff = (got - want).abs().max().item()
    print(f"\nmax |logit diff| ({fmt}, {changes}): {diff:.2e} (logits std {want.std():.2f})")
    assert diff < 1e-4


def test_converted_folder(tmp_path, sp_models):
    from safetensors import safe_open
    from transformers import GlmConfig, GlmForCausalLM

    src = write_checkpoint(tmp_path / "src", TINY, random_weights(TINY), sp_models["bpe"])
    out = cg.convert_chatglm3(src, tmp_path / "out")
    n = spm.SentencePieceProcessor(model_proto=sp_models["bpe"]).vocab_size()
    man = json.loads((out / "manifest.json").read_text())
    assert man["converter_version"] == cg.CONVERTER_VERSION and man["source"] == str(src.resolve())
    assert man["eos_token_id"] == [2, n + 6, n + 8]  # </s>, <|user|>, <|observation|>
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [2, n + 6, n + 8] and gen["pad_token_id"] == 0
    # Exactly the tensors GlmForCausalLM has: none missing (from_pretrained would init them randomly).
    keys = set()
    for f in out.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as fh:
            keys |= set(fh.keys())
    assert keys == set(GlmForCausalLM(GlmConfig.from_pretrained(out)).state_dict())
    assert not list(tmp_path.glob(".out.tmp-*"))  # built beside, renamed into place


def test_generate_matches_reference_greedy(tmp_path, sp_models):
    sd = random_weights(TINY, seed=3)
    out = cg.convert_chatglm3(
        write_checkpoint(tmp_path / "src", TINY, sd, sp_models["bpe"]), tmp_path / "out"
    )
    model = load_glm(out)
    prompt = torch.randint(3, 300, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # KV-cached generation in GLM vs full recomputation in the reference
        got = model.generate(prompt, max_new_tokens=10, do_sample=False)[0, 12:].tolist()
    ids, want = prompt, []
    for _ in range(len(got)):
        nxt = int(chatglm3_logits(sd, TINY, ids)[0, -1].argmax())
        want.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert got == want


def test_real_chatglm3_config_maps(tmp_path):
    real = TINY | {"num_layers": 28, "hidden_size": 4096, "num_attention_heads": 32, "kv_channels": 128,
                   "ffn_hidden_size": 13696, "padded_vocab_size": 65024, "seq_length": 8192,
                   "torch_dtype": "float16"}  # fmt: skip
    glm = cg.glm_config(tmp_path, real, [2, 64795, 64797], 0)
    assert (glm.vocab_size, glm.hidden_size, glm.intermediate_size, glm.num_hidden_layers) == (
        65024,
        4096,
        13696,
        28,
    )
    assert (glm.num_attention_heads, glm.num_key_value_heads, glm.head_dim) == (32, 2, 128)
    assert (
        glm.rope_parameters["partial_rotary_factor"] == 0.5 and glm.rope_parameters["rope_theta"] == 10000.0
    )
    assert (glm.rms_norm_eps, glm.max_position_embeddings, glm.attention_bias) == (1e-5, 8192, True)
    assert (glm.eos_token_id, glm.pad_token_id, glm.tie_word_embeddings) == ([2, 64795, 64797], 0, False)
    assert cg.glm_config(tmp_path, real | {"rope_ratio": 500}, [2], 0).rope_parameters["rope_theta"] == 5e6
    shapes = cg.expected_shapes(cg._dims(tmp_path, real))
    assert shapes["transformer.encoder.layers.0.self_attention.query_key_value.weight"] == (4608, 4096)
    assert shapes["transformer.encoder.layers.27.mlp.dense_h_to_4h.weight"] == (27392, 4096)


PREFIX = "transformer.prefix_encoder.embedding.weight"
FFN_OUT = "transformer.encoder.layers.1.mlp.dense_4h_to_h.weight"


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda sd, cfg: sd.update({PREFIX: torch.zeros(4, 8)}), f"unexpected tensor {PREFIX}"),
        (lambda sd, cfg: sd.pop(FFN_OUT), f"lacks {FFN_OUT}"),
        (lambda sd, cfg: sd.update({FFN_OUT: torch.zeros(3, 3)}), r"shape \(3, 3\)"),
        (lambda sd, cfg: cfg.update(pre_seq_len=16), "P-tuning"),
        (lambda sd, cfg: cfg.update(add_bias_linear=True), "add_bias_linear"),
        (lambda sd, cfg: cfg.pop("padded_vocab_size"), "ChatGLM-6B"),
    ],
    ids=["unexpected-key", "missing-key", "bad-shape", "prefix-tuning", "linear-bias", "chatglm-v1"],
)
def test_bad_checkpoints_name_the_problem(tmp_path, sp_models, edit, match):
    cfg, sd = dict(TINY), random_weights(TINY)
    edit(sd, cfg)
    src = write_checkpoint(tmp_path / "src", cfg, sd, sp_models["bpe"])
    with pytest.raises(ModelError, match=match):
        cg.convert_chatglm3(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_other_glm_generations_refused(tmp_path, sp_models):
    src = write_checkpoint(tmp_path / "src", TINY, random_weights(TINY), sp_models["bpe"])
    (src / "tokenization_chatglm.py").write_text(
        'special_tokens = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]'
    )
    with pytest.raises(ModelError, match="ChatGLM2"):
        cg.convert_chatglm3(src, tmp_path / "out")
    (src / "tokenization_chatglm.py").unlink()
    (src / "tokenizer.model").write_text("IQ== 0\nIg== 1\n")  # GLM-4's tiktoken ranks
    with pytest.raises(ModelError, match="SentencePiece"):
        cg.convert_chatglm3(src, tmp_path / "out")


def test_load_or_convert_caches_and_maybe_convert(tmp_path, sp_models, monkeypatch):
    src = write_checkpoint(tmp_path / "src", TINY, random_weights(TINY), sp_models["bpe"])
    cache = tmp_path / "cache"
    first = cg.load_or_convert(src, cache)
    assert cg.read_manifest(first) is not None
    assert cg.maybe_convert(src, cache) == first  # same source: the cached folder

    def no_convert(*a, **k):
        raise AssertionError("converted again")

    with monkeypatch.context() as m:
        m.setattr(cg, "convert_chatglm3", no_convert)
        assert cg.load_or_convert(src, cache) == first
    shard = next(src.glob("*.safetensors"))
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed checkpoint converts again
    second = cg.load_or_convert(src, cache)
    assert second != first and cg.read_manifest(second) is not None
    other = tmp_path / "qwen"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "qwen2"}')
    assert cg.maybe_convert(other, cache) == other and not cg.is_chatglm3_checkpoint(other)
    assert cg.maybe_convert("Qwen/Qwen2.5-0.5B-Instruct", cache) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert cg.is_chatglm3_checkpoint(src)


# ---- tokenizer ----------------------------------------------------------------------------------


def chatglm3_chat_ids(sp, texts, messages, add_generation_prompt=True):
    """tokenization_chatglm.py: get_prefix_tokens + build_single_message per message (+ <|assistant|>)."""
    n = sp.vocab_size()
    cmd = {t: n + i for i, t in enumerate(texts)}
    ids = [cmd["[gMASK]"], cmd["sop"]]
    for m in messages:
        ids += [cmd[f"<|{m['role']}|>"]] + sp.encode(f"{m.get('metadata', '')}\n") + sp.encode(m["content"])
    return ids + [cmd["<|assistant|>"]] if add_generation_prompt else ids


def chatglm3_decode(sp, texts, ids):
    """SPTokenizer.decode: special tokens as text, the runs between them through SentencePiece."""
    n, text, run = sp.vocab_size(), "", []
    for i in ids:
        if i >= n:
            text, run = text + sp.decode(run) + texts[SPECIAL_TOKENS[i - n]], []
        else:
            run.append(i)
    return text + sp.decode(run)


CHATS = [
    [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "年假有几天？"}],
    [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "你好, people!\nline two"},
     {"role": "user", "content": "  two  spaces\tand tab "}],
    [{"role": "system", "content": "tools"}, {"role": "user", "content": "weather?"},
     {"role": "assistant", "metadata": "get_weather", "content": "{\"city\": \"北京\"}"},
     {"role": "observation", "content": "sunny 25°C 😀"}, {"role": "user", "content": ""}],
]  # fmt: skip


@pytest.fixture(params=["bpe", "unigram", "collide"])
def tokenizer(request, tmp_path, sp_models):
    from transformers import AutoTokenizer, GlmConfig

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tokenizer.model").write_bytes(sp_models[request.param])
    info = convert_tokenizer(tmp_path / "src", tmp_path, model_max_length=128)
    GlmConfig().save_pretrained(tmp_path)  # AutoTokenizer reads model_type glm
    sp = spm.SentencePieceProcessor(model_proto=sp_models[request.param])
    texts = {t: info["renamed"].get(t, t) for t in SPECIAL_TOKENS}
    return AutoTokenizer.from_pretrained(tmp_path), sp, texts


def test_special_tokens_follow_the_sentencepiece_vocabulary(tokenizer):
    tok, sp, texts = tokenizer
    n = sp.vocab_size()
    assert tok.convert_tokens_to_ids([texts[t] for t in SPECIAL_TOKENS]) == list(range(n, n + 9))
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == ("</s>", 2, 0, 0)
    assert tok("请问 people")["input_ids"][:2] == [n + 1, n + 3]  # [gMASK] sop, as encode() prefixes
    assert tok("isotope people", add_special_tokens=False)["input_ids"] == sp.encode("isotope people")


def test_chat_template_renders_chatglm3_format(tokenizer):
    tok, _, texts = tokenizer
    sop = texts["sop"]  # "sop", or "<sop>" when the SentencePiece model already has a "sop" piece
    text = tok.apply_chat_template(CHATS[0], tokenize=False, add_generation_prompt=True)
    assert text == f"[gMASK]{sop}<|system|>\n You are helpful.<|user|>\n 年假有几天？<|assistant|>"
    text = tok.apply_chat_template(CHATS[1][:2], tokenize=False)
    assert text == f"[gMASK]{sop}<|user|>\n hello world<|assistant|>\n 你好, people!\nline two</s>"
    assert tok(text, add_special_tokens=False)["input_ids"][-1] == 2  # the closing eos is </s>, id 2
    with pytest.raises(Exception, match="roles"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


@pytest.mark.parametrize("chat", range(len(CHATS)))
def test_chat_ids_match_chatglm3_token_by_token(tokenizer, chat):
    tok, sp, texts = tokenizer
    messages = CHATS[chat]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]  # as kb.generate.hf encodes prompts
    want = chatglm3_chat_ids(sp, texts, messages)
    assert tok.convert_ids_to_tokens(ids) == tok.convert_ids_to_tokens(want)
    assert ids == want
    assert tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"] == want  # tokenize=True
    assert tok.decode(ids) == chatglm3_decode(sp, texts, want) == text  # round trip


def test_plain_text_round_trip(tokenizer):
    tok, sp, _ = tokenizer
    for s in ["员工报销差旅", "  leading spaces", "a\nb\n\nc", "emoji 😀 and é", "trailing  "]:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        assert ids == sp.encode(s), s
        assert tok.decode(ids) == sp.decode(ids) == s
