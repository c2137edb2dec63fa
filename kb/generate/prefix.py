"""Prefix tuning (P-Tuning v2) forward and generate that work with transformers 5.x caches.

Why this exists (transformers 5.24 + peft 0.21.2): transformers renamed the cache argument from
`past_key_values` to `cache`. `generate()` now keeps its cache under `model_kwargs["cache"]`
(generation/utils.py `_prepare_cache_for_generation`, and `prepare_inputs_for_generation` puts it in
`model_inputs["cache"]`), while peft's `PeftModelForCausalLM.prepare_inputs_for_generation` still only looks
for and writes `past_key_values`: it sees no cache, builds the prefix cache and stores it under
`past_key_values`. The model's forward then receives both names and the `deprecate_kwarg("past_key_values",
new_name="cache")` decorator (utils/deprecation.py) keeps `cache` (the empty cache `generate` made) and drops
`past_key_values`, i.e. the prefix, at every step. The output equals the base model's.

Fix: `PrefixTuningModelForCausalLM` (a `PeftModelForCausalLM` subclass; `enable_prefix_generation` switches a
peft model's class to it) overrides
- `prepare_inputs_for_generation`: on the first step (or every step without a cache) it puts the prefix in
  the cache slot the model really reads, prepends `num_virtual_tokens` ones to the 2-D attention mask and
  shifts position ids by `num_virtual_tokens`;
- `forward`: the same for training/scoring, passing the prefix as `cache=` instead of the deprecated
  `past_key_values=`, which peft's forward uses and which will stop working when transformers removes the
  deprecated name.

Positions follow peft's training convention: the prefix occupies cache slots 0..P-1, so real token i sits at
position P + i (P = num_virtual_tokens). Explicit `position_ids` are 0-based over the real tokens and get P
added, as peft does. Generation derives positions from the attention mask, so left padding is handled.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from peft import PeftModel, PeftModelForCausalLM
from peft.utils import PeftType
from transformers import Cache, DynamicCache, PretrainedConfig

from kb.errors import ModelError


def prefix_kv_geometry(config: PretrainedConfig) -> tuple[int, int, int]:
    """(num_layers, num_kv_heads, head_dim) of the per-layer key/value states the prefix must match.

    With grouped-query attention (Llama 3, Qwen2, GLM/ChatGLM3: 2 KV heads) the cache holds
    num_key_value_heads heads, not num_attention_heads, so the prefix must be built that narrow.
    """
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    if not layers or not heads:
        raise ModelError(f"ptuning-v2: cannot read layer/head counts from {type(config).__name__}")
    if getattr(config, "model_type", "") == "chatglm":
        # Remote-code ChatGLM2/3 layout: multi-query groups play the role of KV heads, kv_channels is head_dim.
        kv_heads = config.multi_query_group_num if getattr(config, "multi_query_attention", False) else heads
        head_dim = config.kv_channels
    else:
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return int(layers), int(kv_heads), int(head_dim)


class PrefixTuningModelForCausalLM(PeftModelForCausalLM):
    """A peft causal-LM whose prefix-tuning adapter is honoured by both `forward` and `generate`.

    Adds no state to `PeftModelForCausalLM`, so an existing instance can switch to it (`__class__`) and it
    saves exactly what peft saves.
    """

    def _is_prefix(self) -> bool:
        return self.active_peft_config.peft_type == PeftType.PREFIX_TUNING

    def _cache_arg(self) -> str:
        # transformers >= 5 models read `cache`; remote-code models written for 4.x still read `past_key_values`.
        params = inspect.signature(self.get_base_model().forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def prefix_cache(self, batch_size: int) -> Cache:
        """A fresh cache holding the learned prefix: per layer, key and value of shape
        (batch_size, num_kv_heads, num_virtual_tokens, head_dim)."""
        cache = self.get_prompt(batch_size)
        if not isinstance(cache, DynamicCache):
            raise ModelError(
                f"ptuning-v2: expected peft to build a DynamicCache prefix, got {type(cache).__name__}"
            )
        return cache

    def _with_prefix_mask(self, mask: Any, batch_size: int) -> Any:
        if mask is None:
            return None
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            raise ModelError("ptuning-v2: only 2-D attention masks (batch, seq_len) are supported")
        # The mask covers the real tokens; the prefix slots in front of them are always visible.
        ones = mask.new_ones(batch_size, self.active_peft_config.num_virtual_tokens)
        return torch.cat([ones, mask], dim=1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        task_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if not self._is_prefix():
            return super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                labels=labels,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=return_dict,
                task_ids=task_ids,
                **kwargs,
            )
        source = input_ids if input_ids is not None else inputs_embeds
        if source is None:
            raise ModelError("ptuning-v2: forward needs input_ids or inputs_embeds")
        batch_size = source.shape[0]
        cache = kwargs.pop("cache", None)
        legacy = kwargs.pop("past_key_values", None)
        cache = cache if cache is not None else legacy
        # A non-empty cache comes from an earlier call of this forward and already starts with the prefix;
        # anything else (None, or an empty cache) gets a fresh prefix.
        if cache is None or cache.get_seq_length() == 0:
            cache = self.prefix_cache(batch_size)
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = kwargs["position_ids"] + self.active_peft_config.num_virtual_tokens
        # peft drops them too: virtual tokens have no token type.
        kwargs.pop("token_type_ids", None)
        for name, value in (
            ("output_attentions", output_attentions),
            ("output_hidden_states", output_hidden_states),
            ("return_dict", return_dict),
        ):
            if value is not None:
                kwargs[name] = value
        kwargs[self._cache_arg()] = cache
        return self.base_model(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=self._with_prefix_mask(attention_mask, batch_size),
            labels=labels,
            **kwargs,
        )

    def prepare_inputs_for_generation(
        self, *args: Any, task_ids: torch.Tensor | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        if not self._is_prefix():
            return super().prepare_inputs_for_generation(*args, task_ids=task_ids, **kwargs)
        # The base model's own preparation slices input_ids to the uncached tail and keeps the cache under the
        # name its forward reads; we only add the prefix on top.
        inputs = self.base_model_prepare_inputs_for_generation(*args, **kwargs)
        # Only remote-code models get one, counted from a cache that does not hold the prefix yet.
        inputs.pop("cache_position", None)
        key = self._cache_arg()
        source = inputs.get("input_ids")
        if source is None:
            source = inputs.get("inputs_embeds")
        batch_size = source.shape[0]  # already expanded for beams / num_return_sequences
        cache = inputs.get(key)
        if kwargs.get("use_cache") is False or cache is None or cache.get_seq_length() == 0:
            # Prefill, or no caching (then the whole sequence is fed each step and needs the prefix each time).
            if cache is not None and not isinstance(cache, DynamicCache):
                raise ModelError(
                    f"ptuning-v2: generation supports the dynamic cache only, got {type(cache).__name__}"
                )
            inputs[key] = self.prefix_cache(batch_size)
        if "attention_mask" in inputs:
            inputs["attention_mask"] = self._with_prefix_mask(inputs["attention_mask"], batch_size)
        if inputs.get("position_ids") is not None:
            # generate() numbers the real tokens from 0 (cumsum of the mask); training puts them after the prefix.
            inputs["position_ids"] = inputs["position_ids"] + self.active_peft_config.num_virtual_tokens
        return inputs


def enable_prefix_generation(model: PeftModel) -> PrefixTuningModelForCausalLM:
    """Make a peft prefix-tuning causal LM (from `get_peft_model` or `PeftModel.from_pretrained`) use its prefix
    in `forward` and `generate`. Changes `model` in place and returns it."""
    if isinstance(model, PrefixTuningModelForCausalLM):
        return model
    if type(model) is not PeftModelForCausalLM:
        raise ModelError(f"ptuning-v2: expected a PeftModelForCausalLM, got {type(model).__name__}")
    if model.active_peft_config.peft_type != PeftType.PREFIX_TUNING:
        raise ModelError(f"ptuning-v2: adapter is {model.active_peft_config.peft_type}, not PREFIX_TUNING")
    model.__class__ = PrefixTuningModelForCausalLM
    return model


def generate_with_prefix(
    model: PeftModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **gen_kwargs: Any
) -> torch.Tensor:
    """`generate` for a prefix-tuning model that may come straight from plain peft."""
    return enable_prefix_generation(model).generate(
        input_ids=input_ids, attention_mask=attention_mask, **gen_kwargs
    )
