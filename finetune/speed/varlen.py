"""Packed rows with per-example attention: FlashAttention's varlen kernel, and its CPU equivalent.

A batch is one row of exactly `token_budget` tokens (so shapes never change between steps and compiled
layers are not recompiled): the packed examples, then a padding segment. `cu_seq_lens_q` marks where each
segment starts ([0, n1, n1+n2, ..., budget]); attention runs causally inside each segment only.

For P-Tuning v2, FastPath.forward hands each layer its P prefix keys/values (`kb_prefix_keys/values`),
which go in front of the row's: P + budget keys. Each example must see the prefix and its own tokens,
nothing else, so the keys are re-gathered per example ([prefix; example], `kb_key_index`) and FlashAttention's causal mask,
aligned bottom-right when keys outnumber queries, lets token i of an example see the P prefix keys and
its own tokens up to i. That is what unpacked P-Tuning v2 computes for every example.

The extra tensors reach the attention function as keyword arguments of the model's forward: transformers
passes `**kwargs` from `XForCausalLM.forward` down to every attention call (cu_seq_lens_* and max_length_*
are the names its own flash-attention path uses).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F

from finetune.collate import _round_up
from finetune.templates import IGNORE_INDEX

NAME = "kb_varlen"
# Segment lengths are rounded up to this for max_length_*, so a compiled layer sees few distinct values.
_MAX_LEN_STEP = 256


class VarlenCollator:
    """Packs → one flattened row of `token_budget` tokens with its segment boundaries.

    Each item is one pack from `pack_examples(examples, token_budget)`. `prefix_len` is P-Tuning v2's
    num_virtual_tokens (0 for LoRA). Returns input_ids, labels, position_ids (restarting per example;
    peft adds P itself for prefix tuning), cu_seq_lens_q/max_length_q, for a prefix also
    cu_seq_lens_k/max_length_k/kb_key_index, and real_tokens (the count the trainer reports).
    """

    def __init__(
        self, pad_token_id: int, token_budget: int, prefix_len: int = 0, max_length: int | None = None
    ) -> None:
        self.pad_token_id, self.budget, self.prefix_len = pad_token_id, token_budget, prefix_len
        # One constant max_length for every batch (the longest example allowed): compiled layers then
        # never see a new value. Padding is cut into segments no longer than it, because the kernel
        # computes only max_length queries of a segment.
        self.max_length = _round_up(max_length or token_budget, _MAX_LEN_STEP)

    def __call__(self, packs: list[dict[str, list[int]]]) -> dict[str, Any]:
        ids, labels, pos, lens = [], [], [], []
        for p in packs:
            ids += p["input_ids"]
            labels += p["labels"]
            pos += p["position_ids"]
            lens += p["seq_lens"]
        real = len(ids)
        if real > self.budget:
            raise ValueError(f"{real} tokens in a batch of budget {self.budget}: use one pack per batch")
        if max(lens, default=0) > self.max_length:
            raise ValueError(f"an example of {max(lens)} tokens is longer than max_length {self.max_length}")
        pad = self.budget - real
        ids += [self.pad_token_id] * pad
        labels += [IGNORE_INDEX] * pad
        while pad > 0:
            piece = min(pad, self.max_length)
            pos += range(piece)
            lens.append(piece)
            pad -= piece
        cu = torch.tensor([0, *lens], dtype=torch.int32).cumsum(0, dtype=torch.int32)
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([ids]),
            "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([pos]),
            "cu_seq_lens_q": cu,
            "max_length_q": self.max_length,
            "real_tokens": real,
        }
        if P := self.prefix_len:
            # keys of segment i: the prefix (0..P-1), then its own tokens (P + start .. P + end - 1).
            index = []
            for start, n in zip(cu[:-1].tolist(), lens, strict=True):
                index += range(P)
                index += range(P + start, P + start + n)
            batch["kb_key_index"] = torch.tensor(index)
            batch["cu_seq_lens_k"] = torch.tensor([0, *(n + P for n in lens)], dtype=torch.int32).cumsum(
                0, dtype=torch.int32
            )
            batch["max_length_k"] = self.max_length + P
        return batch


def _flash_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, set()
    return varlen_attn, set(inspect.signature(varlen_attn).parameters)


_VARLEN, _VARLEN_PARAMS = _flash_varlen()
# Calls per kernel, so a benchmark can show that the GPU never fell back to the per-segment reference.
STATS = {"flash": 0, "reference": 0}


def _count(kernel: str) -> None:
    # Only in eager runs: a counter written inside a compiled region would make every call recompile.
    if not torch.compiler.is_compiling():
        STATS[kernel] += 1


def _segments_reference(q, k, v, cu_q, cu_k, scale):
    """Same function as the flash kernel, one segment at a time with SDPA (CPU, or no flash kernel).

    q (Tq, Hq, D), k/v (Tk, Hk, D). Query i of a segment with n queries and m keys sees keys j <= i + m - n.
    """
    out = torch.empty_like(q)
    for (qs, qe), (ks, ke) in zip(
        zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=True),
        zip(cu_k[:-1].tolist(), cu_k[1:].tolist(), strict=True),
        strict=True,
    ):
        n, m = qe - qs, ke - ks
        if n == 0:
            continue
        allowed = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(diagonal=m - n)
        o = F.scaled_dot_product_attention(
            q[qs:qe].transpose(0, 1),
            k[ks:ke].transpose(0, 1),
            v[ks:ke].transpose(0, 1),
            attn_mask=allowed,
            scale=scale,
            enable_gqa=True,
        )
        out[qs:qe] = o.transpose(0, 1)
    return out


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    max_q: int,
    max_k: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal attention inside each segment. q (Tq, Hq, D), k/v (Tk, Hk, D) → (Tq, Hq, D)."""
    if q.is_cuda and q.dtype == torch.float32 and torch.is_autocast_enabled("cuda"):
        # Under autocast a projection can still hand over fp32 (an fp32 adapter path); attention runs in
        # the autocast dtype, as SDPA would.
        half = torch.get_autocast_dtype("cuda")
        out = varlen_attention(q.to(half), k.to(half), v.to(half), cu_q, cu_k, max_q, max_k, scale)
        return out.to(q.dtype)
    if _VARLEN is None or not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        _count("reference")
        return _segments_reference(q, k, v, cu_q, cu_k, scale)
    _count("flash")
    kwargs: dict[str, Any] = {"scale": scale}
    if "window_size" in _VARLEN_PARAMS:
        kwargs["window_size"] = (-1, 0)  # causal
    else:
        kwargs["is_causal"] = True
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in _VARLEN_PARAMS:
            kwargs["enable_gqa"] = True
        else:
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return _VARLEN(q, k, v, cu_q.to(q.device), cu_k.to(q.device), max_q, max_k, **kwargs)


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface. query (1, Hq, T, D); key/value (1, Hk, T or P + T, D)."""
    if query.shape[0] != 1 or "cu_seq_lens_q" not in kwargs:
        raise ValueError(f"{NAME} attention needs one packed row with cu_seq_lens_q (VarlenCollator)")
    if dropout:
        raise ValueError(f"{NAME} attention: attention dropout is not supported")
    if (prefix_keys := kwargs.get("kb_prefix_keys")) is not None:
        # FastPath.forward's P-Tuning v2 prefix: (layers, 1, Hk, P, D) → this layer's, before the row.
        key = torch.cat([prefix_keys[module.layer_idx].to(key.dtype), key], dim=2)
        value = torch.cat([kwargs["kb_prefix_values"][module.layer_idx].to(value.dtype), value], dim=2)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (T, H, D)
    cu_q, max_q = kwargs["cu_seq_lens_q"], kwargs["max_length_q"]
    index = kwargs.get("kb_key_index")
    if index is not None:
        k, v = k.index_select(0, index), v.index_select(0, index)
        cu_k, max_k = kwargs["cu_seq_lens_k"], kwargs["max_length_k"]
    elif k.shape[0] != q.shape[0]:
        raise ValueError(
            f"{NAME} attention: keys of {k.shape[0]} tokens for {q.shape[0]} queries need kb_key_index"
        )
    else:
        cu_k, max_k = cu_q, max_q
    out = varlen_attention(q, k, v, cu_q, cu_k, max_q, max_k, scaling)
    return out.unsqueeze(0), None


def register() -> None:
    """Make `attn_implementation="kb_varlen"` known to transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention_forward)
