"""Batch encoded examples: right padding, or packing several examples into one row.

Packing relies on transformers' own masking (transformers 5.24, masking_utils.py): `create_causal_mask`
calls `find_packed_sequence_indices(position_ids)` when, and only when, the model gets position_ids, no
2D attention_mask and no cache. A new sequence starts wherever position_ids do not increase by exactly 1,
and the sdpa, eager and flex masks then become block-diagonal causal (each token attends only to earlier
tokens of its own example). Conditions that silently turn this off and let examples attend to each other:

- an attention_mask in the batch (PackedCollator therefore returns none);
- a cache: models create a DynamicCache whenever `use_cache` is true, and `config.use_cache` defaults to
  true; the HF Trainer sets it from TrainingArguments.use_cache (default False), a hand-written loop or
  evaluation with gradient checkpointing off does not; prepare_model_for_packing sets it to False;
- prompt learning (PEFT prefix tuning / P-Tuning v2) feeds its prefix as a cache, so it cannot pack;
- flash attention does not use that mask: it derives cu_seqlens from position_ids only when the batch
  size is 1 (`_is_packed_sequence`), so flash needs `PackedCollator(flatten=True)`;
- remote-code models (trust_remote_code, e.g. the original ChatGLM3) build their own masks and ignore
  packed position_ids.
"""

from __future__ import annotations

import bisect
from typing import Any

import torch

from finetune.templates import IGNORE_INDEX
from kb.errors import ConfigError

# Attention implementations whose masks honour packed position_ids (see the module docstring).
_MASKED = ("sdpa", "eager", "flex_attention")
_FLASH = ("flash_attention_2", "flash_attention_3", "flash_attention_4")


def _round_up(n: int, multiple: int | None) -> int:
    return n if not multiple else -(-n // multiple) * multiple


class PadCollator:
    """Right-pad input_ids with the pad id and labels with -100; attention_mask marks real tokens.

    The mask comes from the example lengths, never from `input_ids == pad_token_id`: pad is often eos.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = _round_up(max(len(f["input_ids"]) for f in features), self.pad_to_multiple_of)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[row, :n] = torch.tensor(f["input_ids"])
            labels[row, :n] = torch.tensor(f["labels"])
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def _pack(examples: list[dict[str, list[int]]]) -> dict[str, list[int]]:
    pack: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": [], "seq_lens": []}
    for ex in examples:
        n = len(ex["input_ids"])
        pack["input_ids"] += ex["input_ids"]
        # The model predicts labels[t] from token t-1; at an example's first token that would be the
        # previous example's last token, so that label must never count.
        pack["labels"] += [IGNORE_INDEX, *ex["labels"][1:]]
        pack["position_ids"] += range(n)
        pack["seq_lens"].append(n)
    return pack


def pack_examples(examples: list[dict[str, list[int]]], max_len: int) -> list[dict[str, list[int]]]:
    """Pack examples into rows of at most `max_len` tokens (best-fit decreasing).

    Each pack has input_ids, labels, position_ids (restarting at 0 for every example) and seq_lens.
    An example longer than max_len is an error: encode() already bounds lengths, so it means the packing
    length is below max_source_len + max_target_len.
    """
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    bins: list[list[int]] = []
    # (free space, bin index), kept sorted, so the tightest bin that fits is one bisect away.
    free: list[tuple[int, int]] = []
    for i in order:
        n = len(examples[i]["input_ids"])
        if n > max_len:
            raise ValueError(f"example of {n} tokens does not fit in packs of {max_len}")
        if n == 0:
            continue
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):
            bins.append([i])
            space, b = max_len - n, len(bins) - 1
        else:
            space, b = free.pop(at)
            bins[b].append(i)
            space -= n
        bisect.insort(free, (space, b))
    return [_pack([examples[i] for i in b]) for b in bins]


class PackedCollator:
    """Batch packs: input_ids, labels and position_ids, and deliberately no attention_mask.

    Padding forms a segment of its own (positions restart at 0, labels -100), so it is isolated like any
    other packed example. `flatten=True` concatenates the whole batch into one row, which flash attention
    needs (see the module docstring).
    """

    def __init__(
        self, pad_token_id: int, pad_to_multiple_of: int | None = None, flatten: bool = False
    ) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.flatten = flatten

    def __call__(self, packs: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        keys = ("input_ids", "labels", "position_ids")
        if self.flatten:
            packs = [{k: [x for p in packs for x in p[k]] for k in keys}]
        width = _round_up(max(len(p["input_ids"]) for p in packs), self.pad_to_multiple_of)
        rows: dict[str, list[list[int]]] = {k: [] for k in keys}
        for p in packs:
            pad = width - len(p["input_ids"])
            rows["input_ids"].append(p["input_ids"] + [self.pad_token_id] * pad)
            rows["labels"].append(p["labels"] + [IGNORE_INDEX] * pad)
            rows["position_ids"].append(p["position_ids"] + list(range(pad)))
        return {k: torch.tensor(v, dtype=torch.long) for k, v in rows.items()}


def prepare_model_for_packing(model: Any) -> bool:
    """Make `model` honour packed position_ids, or raise ConfigError when it cannot.

    Sets `config.use_cache = False` (a cache disables packed-sequence detection). Returns True when the
    collator must flatten each batch into a single row (flash attention).
    """
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict):
        active = getattr(model, "active_adapter", None)
        cfg = peft_config.get(active) if isinstance(active, str) else None
        if getattr(cfg, "is_prompt_learning", False):
            raise ConfigError("packing: not with P-Tuning v2 / prefix tuning (its prefix cache disables it)")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if type(base).__module__.startswith("transformers_modules"):
        raise ConfigError(f"packing: {type(base).__name__} is remote code with its own attention masks")
    impl = getattr(base.config, "_attn_implementation", None)
    if impl not in _MASKED + _FLASH:
        raise ConfigError(f"packing: attention implementation {impl!r} does not isolate packed examples")
    base.config.use_cache = False
    return impl in _FLASH
