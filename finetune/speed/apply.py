"""Switch a (peft-wrapped) causal LM onto the fast path for training, and back for saving/generation.

fast = FastPath(model, settings)   # varlen attention, lm_head fused into the loss, compiled layers
loss = fast.loss(model(**batch_without_labels), labels, num_items)
fast.restore()                     # the model is an ordinary transformers/peft model again
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from finetune.speed import varlen
from finetune.speed.loss import linear_cross_entropy
from kb.errors import ConfigError


class HiddenStates(nn.Module):
    """Stands in for the output layer during training: passes hidden states through, keeps the head."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


def fast_path_active(setting: str) -> bool:
    """`speed.fast_path`: auto = on when CUDA is available; always; never."""
    if setting == "never":
        return False
    if setting == "always":
        return True
    return torch.cuda.is_available()


def _base_model(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def prompt_learning(model: Any) -> bool:
    """Is `model` a peft model whose active adapter is prompt learning (P-Tuning v2, prefix tuning)?"""
    peft_config = getattr(model, "peft_config", None)
    if not isinstance(peft_config, dict):
        return False
    cfg = peft_config.get(getattr(model, "active_adapter", None))
    return bool(getattr(cfg, "is_prompt_learning", False))


def decoder_layers(model: Any) -> nn.ModuleList:
    """The stack of decoder layers of a transformers causal LM (Llama, Qwen, GLM, ... keep it at .model.layers)."""
    inner = getattr(_base_model(model), "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"speed: cannot find the decoder layers of {type(_base_model(model)).__name__}")
    return layers


class FastPath:
    def __init__(
        self, model: Any, *, loss_chunk: int = 4096, compile: bool = False, top_level: bool = False
    ) -> None:
        base = _base_model(model)
        if type(base).__module__.startswith("transformers_modules"):
            raise ConfigError(
                f"speed: {type(base).__name__} is remote code with its own attention; convert it first"
            )
        head = base.get_output_embeddings()
        if head is None or head.weight.requires_grad:
            raise ConfigError("speed: the output layer must exist and be frozen (LoRA / P-Tuning v2)")
        varlen.register()
        self.base, self.loss_chunk = base, loss_chunk
        self.prefix_len = (
            model.peft_config[model.active_adapter].num_virtual_tokens if prompt_learning(model) else 0
        )
        self._attn = base.config._attn_implementation
        self._use_cache = base.config.use_cache
        base.config._attn_implementation = varlen.NAME
        base.config.use_cache = False
        # The model returns hidden states where logits were; loss() applies the head chunk by chunk.
        # The head stays inside the model so that moving the model (Trainer → GPU) moves it too.
        base.set_output_embeddings(HiddenStates(head))
        self.peft_model = model
        self.prefix_in_model = bool(self.prefix_len) and top_level
        if self.prefix_in_model:
            # An instance attribute that restore() deletes; a partial, not a bound method (no __func__).
            model.forward = functools.partial(FastPath._prefix_forward, self)
        self.compiled = False
        if compile and torch.cuda.is_available():
            import torch._dynamo.config as dynamo_config

            # Layers differ only in int attributes such as layer_idx (P-Tuning v2's cache reads it);
            # without this every layer would compile its own graph and hit the recompile limit.
            dynamo_config.allow_unspec_int_on_nn_module = True
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 32)
            for layer in decoder_layers(model):
                layer.compile()
            self.compiled = True

    def forward(self, model: Any, inputs: dict[str, Any]) -> Any:
        """The model's forward on a VarlenCollator batch (without labels)."""
        if self.prefix_len and not self.prefix_in_model:
            return self._prefix_forward(**inputs)
        return model(**inputs)

    def _prefix_forward(self, **inputs: Any) -> Any:
        """Stands in for the peft model's forward under P-Tuning v2 (installed in __init__).

        peft would pass its prefix as a cache that each layer extends, which makes every compiled layer
        see different inputs. Instead the prefix keys/values go in as two stacked tensors
        (layers, 1, kv_heads, P, head_dim) that the varlen attention reads by layer index, and the
        positions are shifted by P as peft does.

        Under ZeRO-3 this replaces the peft model's forward (`top_level`), so that the top-level module
        still runs: ZeRO-3 resets its weight-prefetch trace in that module's forward hook (called beside
        it instead, 2 ranks drifted from 1 from the third step on). Elsewhere it is called beside it:
        accelerate's mixed precision rebinds a model's forward to the model, which would break there.
        """
        cache = self.peft_model.get_prompt(batch_size=1)
        keys = torch.stack([layer.keys for layer in cache.layers])
        values = torch.stack([layer.values for layer in cache.layers])
        inputs = {**inputs, "position_ids": inputs["position_ids"] + self.prefix_len}
        return self.base(**inputs, kb_prefix_keys=keys, kb_prefix_values=values)

    def loss(self, outputs: Any, labels: torch.Tensor, num_items: Any = None) -> torch.Tensor:
        hidden = outputs.logits if hasattr(outputs, "logits") else outputs[0]  # (1, T, h): hidden states
        weight = self.base.get_output_embeddings().head.weight
        if not hasattr(weight, "ds_id"):
            return linear_cross_entropy(hidden, weight, labels, num_items, self.loss_chunk)
        # ZeRO-3 holds a shard of the head on each rank and gathers a module's weights only when the
        # module runs, which the head never does here: gather it for the loss (every rank computes a loss
        # at the same step, so the collective matches). The gradient with respect to the hidden states
        # is taken inside this forward, so backward needs the full weight no longer.
        import deepspeed

        with deepspeed.zero.GatheredParameters([weight]):
            return linear_cross_entropy(hidden, weight, labels, num_items, self.loss_chunk)

    def restore(self) -> None:
        """Undo every switch: attention implementation, cache flag and the output layer."""
        self.base.set_output_embeddings(self.base.get_output_embeddings().head)
        if self.prefix_in_model:
            del self.peft_model.forward
        self.base.config._attn_implementation = self._attn
        self.base.config.use_cache = self._use_cache
