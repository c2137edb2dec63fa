"""Load ChatGLM3-6B (ModelScope `ZhipuAI/chatglm3-6b`) without `trust_remote_code`.

ChatGLM3 ships its own modeling code (model_type "chatglm"). Its math is exactly transformers' native
GLM (`GlmForCausalLM`, made for GLM-4's original checkpoints, which share the layout), so on first load
the checkpoint is converted once into a cache folder that plain `from_pretrained` reads:

- config: renamed keys (glm_config); RoPE base 10000 × rope_ratio on half of each head.
- weights: query_key_value rows [q; k; v] → q_proj/k_proj/v_proj (weight and bias); dense → o_proj;
  dense_h_to_4h → gate_up_proj, same [gate; up] halves (ChatGLM: silu(x[:F]) * x[F:], GlmMLP: up *
  silu(gate) with gate = first half); dense_4h_to_h → down_proj; rotary inv_freq dropped.
- RoPE needs no permutation: ChatGLM3 rotates lanes (2i, 2i+1) of the first head_dim/2 with
  theta_i = base^(-2i / (head_dim/2)); GLM's apply_rotary_pos_emb (repeat_interleave'd cos/sin,
  even/odd rotate_half, partial_rotary_factor 0.5) computes the same.
- tokenizer: kb.generate.chatglm3_tokenizer.
Weights come from safetensors, or from `pytorch_model*.bin` through `torch.load(weights_only=True)`,
which unpickles tensors and plain containers only: never arbitrary pickled objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kb.errors import ModelError
from kb.generate.chatglm3_tokenizer import STOP_TOKENS, check_tokenizer_code, convert_tokenizer

CONVERTER_VERSION = 1
MANIFEST = "manifest.json"
_LAYER = "transformer.encoder.layers."
# Settings whose other value means math GlmForCausalLM does not have: (key, required, default).
_REQUIRED = (
    ("rmsnorm", True, True),
    ("post_layer_norm", True, True),
    ("apply_residual_connection_post_layernorm", False, False),
    ("add_bias_linear", False, False),
)

Progress = Callable[[str], None]  # gets one-line status messages


def _bad(path: Path, reason: str) -> ModelError:
    return ModelError(f"{path}: {reason}")


def _read_config(src: Path) -> dict[str, Any]:
    try:
        return json.loads((src / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _bad(src / "config.json", f"missing or unreadable ({e})") from e


def is_chatglm3_checkpoint(path: Path | str) -> bool:
    """True for a local folder whose config.json says model_type "chatglm" (ChatGLM's remote-code
    format). convert_chatglm3 then checks it really is ChatGLM3 and says why if not."""
    try:
        return _read_config(Path(path)).get("model_type") == "chatglm"
    except (ModelError, AttributeError):  # no or bad config.json, or not a JSON object
        return False


def _check_variant(src: Path, cfg: dict[str, Any]) -> None:
    """Refuse the other models that share model_type "chatglm", with the reason."""
    if "padded_vocab_size" not in cfg or "kv_channels" not in cfg:
        raise _bad(src, "chatglm config without padded_vocab_size/kv_channels: ChatGLM-6B (v1), not v3")
    check_tokenizer_code(src)
    if cfg.get("pre_seq_len") is not None:
        raise _bad(src, f"pre_seq_len {cfg['pre_seq_len']}: P-tuning v2 prefix checkpoints are not supported")
    if cfg.get("quantization_bit"):
        raise _bad(src, f"quantization_bit {cfg['quantization_bit']}: quantized weights are not supported")
    for key, want, default in _REQUIRED:
        if cfg.get(key, default) != want:
            raise _bad(src, f"config {key}={cfg.get(key)!r}: only {want} maps onto transformers' GLM")


def _dims(src: Path, cfg: dict[str, Any]) -> dict[str, int]:
    try:
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        d = {
            "hidden": hidden,
            "heads": heads,
            "head_dim": int(cfg.get("kv_channels") or hidden // heads),
            # Without multi-query attention every head has its own k/v: kv heads = heads.
            "kv_heads": int(cfg["multi_query_group_num"]) if cfg.get("multi_query_attention") else heads,
            "ffn": int(cfg["ffn_hidden_size"]),
            "layers": int(cfg["num_layers"]),
            "vocab": int(cfg["padded_vocab_size"]),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(src / "config.json", f"missing or bad ChatGLM setting ({type(e).__name__}: {e})") from e
    if heads % d["kv_heads"]:
        raise _bad(src / "config.json", f"{heads} heads do not split into {d['kv_heads']} key/value groups")
    return d


def glm_config(src: Path, cfg: dict[str, Any], eos_ids: list[int], pad_id: int):  # -> GlmConfig
    """The GlmConfig equivalent to ChatGLM3's config.json."""
    from transformers import GlmConfig

    _check_variant(src, cfg)
    d = _dims(src, cfg)
    rope_theta = 10000.0 * float(cfg.get("rope_ratio", 1.0))
    glm = GlmConfig(
        vocab_size=d["vocab"],
        hidden_size=d["hidden"],
        intermediate_size=d["ffn"],
        num_hidden_layers=d["layers"],
        num_attention_heads=d["heads"],
        num_key_value_heads=d["kv_heads"],
        head_dim=d["head_dim"],
        hidden_act="silu",  # ChatGLM's swiglu
        max_position_embeddings=int(cfg.get("seq_length", 8192)),
        rms_norm_eps=float(cfg.get("layernorm_epsilon", 1e-5)),
        # ChatGLM3: rotary on head_dim/2 lanes, base 10000 × rope_ratio (1 unless a long-context variant).
        rope_parameters={"rope_type": "default", "partial_rotary_factor": 0.5, "rope_theta": rope_theta},
        attention_bias=bool(cfg.get("add_qkv_bias", False) or cfg.get("add_bias_linear", False)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
    )
    glm.architectures = ["GlmForCausalLM"]
    if cfg.get("torch_dtype") in ("float16", "bfloat16", "float32"):
        glm.dtype = cfg["torch_dtype"]
    return glm


def expected_shapes(d: dict[str, int], qkv_bias: bool = True) -> dict[str, tuple[int, ...]]:
    """Every tensor of a ChatGLM3 checkpoint with config dims `d`, by its ChatGLM name."""
    h, hd, kv = d["hidden"], d["head_dim"], d["kv_heads"]
    qkv = (d["heads"] + 2 * kv) * hd  # q for every head, then k and v for each group
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.embedding.word_embeddings.weight": (d["vocab"], h),
        "transformer.encoder.final_layernorm.weight": (h,),
        "transformer.output_layer.weight": (d["vocab"], h),
    }
    for i in range(d["layers"]):
        p = f"{_LAYER}{i}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "self_attention.query_key_value.weight": (qkv, h),
            **({p + "self_attention.query_key_value.bias": (qkv,)} if qkv_bias else {}),
            p + "self_attention.dense.weight": (h, d["heads"] * hd),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.dense_h_to_4h.weight": (2 * d["ffn"], h),  # [gate; up], each ffn wide
            p + "mlp.dense_4h_to_h.weight": (h, d["ffn"]),
        }
    return shapes


_RENAME = {  # per layer; input_layernorm and post_attention_layernorm keep their names
    "self_attention.dense.weight": "self_attn.o_proj.weight",
    "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
    "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
}
_TOP = {
    "transformer.embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "transformer.encoder.final_layernorm.weight": "model.norm.weight",
    "transformer.output_layer.weight": "lm_head.weight",
}
_INV_FREQ = "transformer.rotary_pos_emb.inv_freq"  # a buffer GLM recomputes from rope_theta


def convert_tensor(name: str, t, d: dict[str, int], mqa: bool) -> list[tuple[str, Any]]:
    """(GLM name, tensor) pairs for one known ChatGLM tensor (a name from expected_shapes)."""
    if name in _TOP:
        return [(_TOP[name], t)]
    layer, _, rest = name.removeprefix(_LAYER).partition(".")
    prefix = f"model.layers.{layer}."
    if "query_key_value" not in rest:
        return [(prefix + _RENAME.get(rest, rest), t)]
    kind = rest.rpartition(".")[2]  # weight (out, hidden) or bias (out,)
    hd, heads, kv = d["head_dim"], d["heads"], d["kv_heads"]
    if mqa:
        # Rows: [q (heads × hd) | k (groups × hd) | v (groups × hd)], as SelfAttention splits them.
        q, k, v = t.split([heads * hd, kv * hd, kv * hd], dim=0)
    else:
        # Without MQA ChatGLM views the rows as (heads, 3 × hd) and splits each head's block into q, k, v.
        per_head = t.reshape(heads, 3, hd, *t.shape[1:])
        q, k, v = (per_head[:, j].reshape(heads * hd, *t.shape[1:]) for j in range(3))
    # clone: safetensors refuses tensors that share storage, and slices of one tensor do.
    return [(f"{prefix}self_attn.{p}_proj.{kind}", x.clone()) for p, x in zip("qkv", (q, k, v), strict=True)]


def weight_files(src: Path) -> list[Path]:
    """Safetensors shards if any (the release ships both), else pytorch_model*.bin shards."""
    for kind, pattern in (
        ("model.safetensors", "*.safetensors"),
        ("pytorch_model.bin", "pytorch_model*.bin"),
    ):
        index = src / f"{kind}.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                return [src / n for n in sorted(set(weight_map.values()))]
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise _bad(index, f"unreadable shard index ({e})") from e
        if found := sorted(src.glob(pattern)):
            return found
    raise _bad(src, "no weights: expected *.safetensors or pytorch_model*.bin")


def _tensors(path: Path) -> Iterator[tuple[str, Any]]:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    yield key, f.get_tensor(key)
        else:
            # weights_only: tensors and plain containers only, no arbitrary pickled objects.
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            if not isinstance(state, dict):
                raise _bad(path, f"expected a state dict, found {type(state).__name__}")
            yield from state.items()
    except ModelError:
        raise
    except Exception as e:  # corrupt file, not a checkpoint, refused pickle: all "cannot read"
        raise _bad(path, f"cannot read weights ({type(e).__name__}: {e})") from e


def convert_weights(src: Path, out: Path, cfg: dict[str, Any]) -> int:
    """Write out/model*.safetensors (+ index) shard by shard, so memory stays near one shard. Returns
    the number of tensors written."""
    from safetensors.torch import save_file

    d = _dims(src, cfg)
    mqa = bool(cfg.get("multi_query_attention"))
    shapes = expected_shapes(d, qkv_bias=bool(cfg.get("add_qkv_bias", False)))
    if tied := bool(cfg.get("tie_word_embeddings", False)):
        shapes.pop("transformer.output_layer.weight")
    files = weight_files(src)
    seen: dict[str, Path] = {}
    weight_map: dict[str, str] = {}
    total = 0
    for i, path in enumerate(files, 1):
        shard: dict[str, Any] = {}
        for name, t in _tensors(path):
            if name in seen:
                raise _bad(path, f"tensor {name} also in {seen[name].name}")
            seen[name] = path
            if name == _INV_FREQ or (tied and name == "transformer.output_layer.weight"):
                continue
            if name not in shapes:
                raise _bad(path, f"unexpected tensor {name}: not in a ChatGLM3 checkpoint with this config")
            if tuple(t.shape) != shapes[name]:
                raise _bad(path, f"tensor {name} has shape {tuple(t.shape)}, config says {shapes[name]}")
            shard.update(convert_tensor(name, t, d, mqa))
        if not shard:
            continue
        fname = "model.safetensors" if len(files) == 1 else f"model-{i:05d}-of-{len(files):05d}.safetensors"
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in shard.values())
        weight_map |= dict.fromkeys(shard, fname)
    missing = sorted(set(shapes) - set(seen))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise _bad(src, f"checkpoint lacks {', '.join(missing[:3])}{more}")
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return len(weight_map)


def source_fingerprint(src: Path) -> str:
    """sha256 of config.json's settings plus name, size and mtime of every weight and tokenizer file:
    changes when the checkpoint does, without hashing 12 GB."""
    h = hashlib.sha256(f"chatglm3-converter-{CONVERTER_VERSION}\n".encode())
    h.update(json.dumps(_read_config(src), sort_keys=True).encode())
    names = ("config.json", "tokenizer.model", "tokenization_chatglm.py")
    for p in [src / n for n in names if (src / n).is_file()] + weight_files(src):
        try:
            st = p.stat()
        except OSError as e:  # e.g. a shard the index lists but the folder lacks
            raise _bad(p, f"cannot read ({e})") from e
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def convert_chatglm3(src_dir: Path | str, out_dir: Path | str, *, progress: Progress | None = None) -> Path:
    """Convert the ChatGLM3 checkpoint in src_dir into a GlmForCausalLM folder at out_dir. Built in a
    temporary sibling folder and renamed into place, so out_dir is complete or absent."""
    import torch
    import transformers
    from transformers import GenerationConfig

    src, final = Path(src_dir), Path(out_dir)
    say = progress or (lambda _msg: None)
    cfg = _read_config(src)
    if cfg.get("model_type") != "chatglm":
        raise _bad(src, f"model_type {cfg.get('model_type')!r}, not chatglm: not a ChatGLM3 checkpoint")
    _check_variant(src, cfg)
    fingerprint = source_fingerprint(src)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as e:
        raise _bad(final, f"cannot write the converted model ({e})") from e
    t0 = time.perf_counter()
    try:
        tok = convert_tokenizer(src, tmp, model_max_length=int(cfg.get("seq_length", 8192)))
        ids, vocab = tok["ids"], _dims(src, cfg)["vocab"]
        if max(ids.values()) >= vocab:
            raise _bad(src, f"tokenizer ids reach {max(ids.values())}, beyond padded_vocab_size {vocab}")
        eos_ids = [tok["eos"], *(ids[t] for t in STOP_TOKENS)]  # ChatGLM3 chat(): [2, 64795, 64797]
        glm_config(src, cfg, eos_ids, tok["pad"]).save_pretrained(str(tmp))
        GenerationConfig(eos_token_id=eos_ids, pad_token_id=tok["pad"]).save_pretrained(str(tmp))
        say(f"converting ChatGLM3 weights from {src} (once)")
        n = convert_weights(src, tmp, cfg)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "converter": "kb.generate.chatglm3",
            "converter_version": CONVERTER_VERSION,
            "source": str(src.resolve()),
            "source_fingerprint": fingerprint,
            "tensors": n,
            "special_tokens": ids,
            "renamed_special_tokens": tok["renamed"],
            "eos_token_id": eos_ids,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": files,
        }
        # Written last: its presence marks the folder complete.
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if final.exists():  # stale or incomplete: move aside first, then drop it
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            with contextlib.suppress(OSError):  # a concurrent converter moved it already
                final.rename(trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(final)
    except OSError as e:
        raise _bad(final, f"cannot write the converted model ({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"ChatGLM3 converted in {time.perf_counter() - t0:.0f} s → {final}")
    return final


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest if `out` is a complete conversion by this converter version, else None."""
    try:
        man = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        ok = man.get("converter_version") == CONVERTER_VERSION
        ok = ok and all((out / name).stat().st_size == size for name, size in man["files"].items())
        return man if ok else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes, also on a crash
        yield


def load_or_convert(src_dir: Path | str, cache_root: Path | str, *, progress: Progress | None = None) -> Path:
    """The converted folder for src_dir under cache_root, converting on first use. The folder name
    carries a hash of the source's config and file sizes/mtimes, so a changed checkpoint converts again."""
    src, root = Path(src_dir), Path(cache_root)
    fingerprint = source_fingerprint(src)
    final = root / f"{src.resolve().name}-glm-{fingerprint[:16]}"

    def ready() -> bool:
        return (read_manifest(final) or {}).get("source_fingerprint") == fingerprint

    if ready():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _lock(root / f".{final.name}.lock"):  # one converter per source; others wait, then reuse
            return final if ready() else convert_chatglm3(src, final, progress=progress)
    except OSError as e:  # the conversion's own write errors are ModelErrors already
        raise _bad(root, f"cannot use the model cache ({e})") from e


def maybe_convert(model_path: Path | str, cache_root: Path | str | None = None) -> Path | str:
    """What from_pretrained should load: the converted folder for a local ChatGLM3 checkpoint,
    otherwise `model_path` unchanged (hub ids, other local models). Cache: ${KB_CACHE:-~/.cache/kb}/models."""
    from kb.generate.bundled import cache_root as default_root

    if not is_chatglm3_checkpoint(model_path):  # hub ids land here too: no such local folder
        return model_path
    root = default_root() if cache_root is None else cache_root
    return load_or_convert(Path(model_path), root, progress=lambda m: print(f"kb: {m}", file=sys.stderr))
