"""Helpers shared by the CLI's command modules."""

from __future__ import annotations

import argparse

from kb.config import Config


def config_from_args(args: argparse.Namespace) -> Config:
    from kb.config import load_config

    overrides = [s for s in args.set if not s.startswith("finetune.")]  # those go to the fine-tuning config
    if args.kb:
        overrides.append(f"kb_dir={args.kb}")
    if getattr(args, "base", False):
        overrides.append("generator.adapter=none")
    elif getattr(args, "adapter", None):
        overrides.append(f"generator.adapter={args.adapter}")
    return load_config(args.config, overrides)
