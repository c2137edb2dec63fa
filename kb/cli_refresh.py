"""CLI commands of the refresh loop: synthesize pairs, fine-tune, manage the model registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kb.cli_common import config_from_args


def cmd_synth(args: argparse.Namespace) -> int:
    from ingest.synth import synthesize
    from kb.service import open_generator
    from kb.store import Store

    cfg = config_from_args(args)
    store = Store.open(cfg.kb_dir)
    generator = None if args.no_llm else open_generator(cfg)
    out = args.out or Path(cfg.kb_dir) / "synth"
    report = synthesize(
        cfg,
        store,
        generator,
        out_dir=out,
        per_chunk=args.per_chunk,
        fmt=args.format,
        use_llm=not args.no_llm,
        seed=args.seed,
        reply=args.reply,
    )
    print(json.dumps(report.to_json()) if args.json else report.summary())
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from finetune.config import METHOD_RECIPES, load_finetune_config
    from finetune.run import finetune

    kb_cfg = config_from_args(args)
    overrides = [f"kb_dir={kb_cfg.kb_dir}"]
    for flag, key in (
        ("method", "method"),
        ("model", "model"),
        ("data", "data.train"),
        ("gpus", "gpus"),
        ("deepspeed", "deepspeed"),
        ("name", "name"),
    ):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.no_activate:
        overrides.append("activate=false")
    ft_sets = [s.removeprefix("finetune.") for s in args.set if s.startswith("finetune.")]
    # No YAML given: the chosen method's shipped recipe (LoRA's when no method is named either).
    ft_config = args.ft_config or METHOD_RECIPES.get(args.method or "lora")
    cfg = load_finetune_config(ft_config, overrides + ft_sets)
    report = finetune(cfg, resume=args.resume, verbose=args.verbose, kb_cfg=kb_cfg, force=args.force)
    print(
        json.dumps(
            {
                "name": report.name,
                "path": str(report.path),
                "activated": report.activated,
                "gate": report.gate,
                **report.result,
            }
        )
        if args.json
        else report.summary()
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from kb.registry import Registry

    cfg = config_from_args(args)
    registry = Registry(cfg.kb_dir)
    if args.action == "list":
        adapters = registry.list()
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "name": a.name,
                            "method": a.method,
                            "base_model": a.base_model,
                            "active": a.active,
                            "metrics": a.metrics,
                            "gate": a.gate,
                            "path": str(a.path),
                        }
                        for a in adapters
                    ]
                )
            )
            return 0
        for a in adapters:
            # Scalars only: the gate's per-set scores are nested (shown by --json).
            metrics = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in a.metrics.items()
                if not isinstance(v, dict)
            )
            if a.gate.get("decision"):
                metrics += f" gate={a.gate['decision']}"
            print(f"{'*' if a.active else ' '} {a.name:<16} {a.method:<11} {a.base_model:<28} {metrics}")
        print(f"{len(adapters)} adapter(s); active: {registry.active_name() or 'base model'}")
        return 0
    if args.action == "activate":
        registry.activate(None if args.name == "none" else args.name)
        print(f"active model: {args.name if args.name != 'none' else 'base model'}")
        return 0
    from finetune.export import merge_adapter

    out = merge_adapter(registry.get(args.name), args.out)
    print(f"merged {args.name} into its base model → {out}")
    return 0
