"""`kb models merge`: fold a LoRA adapter into its base model for export as a plain checkpoint."""

from __future__ import annotations

from pathlib import Path

from kb.registry import AdapterInfo


def merge_adapter(adapter: AdapterInfo, out: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.methods import method_for_adapter
    from kb.generate.resolve import resolve_model

    method = method_for_adapter(adapter.path)
    if not method.can_merge:
        method.merge(None)  # raises MergeNotSupported with the reason
    source = resolve_model(adapter.base_model)
    base = AutoModelForCausalLM.from_pretrained(source)
    merged = method.merge(method.load(base, adapter.path))
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(adapter.path).save_pretrained(out)
    return out
