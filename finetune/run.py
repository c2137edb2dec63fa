"""`kb finetune`: name the run, train (one process or several), publish the adapter in the registry.

Nothing reaches models/<name>/ before training finished and the adapter is saved: a crash leaves
the run under models/.runs/<name>/ where `--resume` continues it.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.config import FinetuneConfig
from kb.errors import ModelError
from kb.registry import AdapterInfo, Registry


@dataclass
class FinetuneReport:
    name: str
    path: Path
    result: dict[str, Any]
    activated: bool

    def summary(self) -> str:
        r = self.result
        loss = f"{r['final_loss']:.4f}" if r.get("final_loss") is not None else "n/a"
        skipped = r.get("skipped") or {}
        skips = (
            f", {sum(skipped.values())} skipped ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})"
            if skipped
            else ""
        )
        return (
            f"finetune: {self.name} — {r.get('train_examples', '?')} examples{skips}, "
            f"{r['steps']} steps, final loss {loss}, "
            f"{r['tokens_per_s']:.0f} tok/s, peak memory {r['peak_memory_gib']:.1f} GiB → {self.path}"
            + (" (active)" if self.activated else "")
        )


def finetune(
    cfg: FinetuneConfig, *, resume: bool = False, verbose: bool = False, progress: bool = True
) -> FinetuneReport:
    registry = Registry(cfg.kb_dir)
    name = cfg.name
    if resume and not name:
        name = registry.latest_run() or ""
        if not name:
            raise ModelError(f"--resume: no unfinished run under {registry.root / '.runs'}")
    name = name or registry.next_name(cfg.method)
    if (registry.root / name).exists():
        raise ModelError(f"adapter {name!r} already exists in {registry.root}; choose another name")
    run_dir = registry.run_dir(name)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / "run.lock", "a")  # noqa: SIM115 - held while this run trains
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ModelError(f"run {name!r} is training in another process; wait for it") from None
    try:
        return _run(cfg, registry, name, run_dir, resume=resume, verbose=verbose, progress=progress)
    finally:
        lock.close()  # closing releases the flock


def _run(
    cfg: FinetuneConfig,
    registry: Registry,
    name: str,
    run_dir: Path,
    *,
    resume: bool,
    verbose: bool,
    progress: bool,
) -> FinetuneReport:
    from finetune.train import data_paths, file_sha256

    registry.prune_runs(cfg.keep_unfinished_runs, current=name)
    cfg.dump(run_dir / "train_config.yaml")  # the resolved config, beside the run's outputs
    train_path, val_path = data_paths(cfg)

    if cfg.gpus > 1 or cfg.deepspeed:
        from finetune.launch import launch

        # DeepSpeed needs a distributed environment even for one rank; torchrun provides it.
        launch(run_dir, cfg.gpus, resume=resume)
        result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    else:
        from finetune.train import train

        result = train(cfg, run_dir, resume=resume, verbose=verbose, progress=progress).to_json()
    adapter = run_dir / "adapter"
    shutil.copy(run_dir / "train_config.yaml", adapter / "train_config.yaml")
    if (run_dir / "curve.jsonl").exists():
        shutil.copy(run_dir / "curve.jsonl", adapter / "curve.jsonl")
    meta = {
        "method": cfg.method,
        "base_model": cfg.model,
        "data": str(train_path),
        "data_sha256": file_sha256(train_path),
        "validation": str(val_path) if val_path else None,
        "metrics": {k: result[k] for k in ("final_loss", "eval_loss", "tokens_per_s", "steps")},
        "trained_at": time.time(),
    }
    info: AdapterInfo = registry.publish(name, adapter, meta)
    shutil.rmtree(run_dir, ignore_errors=True)
    if cfg.activate:
        registry.activate(name)
    return FinetuneReport(name, info.path, result, cfg.activate)
