"""`--set` values for the pass-through sections arrive typed (TrainingArguments gets numbers, not strings)."""

from finetune.config import load_finetune_config


def test_overrides_of_pass_through_sections_are_typed():
    cfg = load_finetune_config(
        overrides=[
            "training.learning_rate=5e-4",
            "training.max_steps=40",
            "training.bf16=false",
            "training.lr_scheduler_type=cosine",
            "training.run_name=inf",
            "lora.target_modules=[q_proj, v_proj]",
        ]
    )
    assert cfg.training["learning_rate"] == 5e-4 and isinstance(cfg.training["learning_rate"], float)
    assert cfg.training["max_steps"] == 40 and cfg.training["bf16"] is False
    assert cfg.training["lr_scheduler_type"] == "cosine"
    assert cfg.training["run_name"] == "inf"  # a name, not float("inf")
    assert cfg.lora["target_modules"] == ["q_proj", "v_proj"]
