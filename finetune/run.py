"""`kb finetune`: name the run, train (one process or several), publish the adapter in the registry,
and activate it if the promotion gate (kb/eval/gate.py) finds no regression.

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
from kb.config import Config
from kb.errors import ModelError
from kb.registry import AdapterInfo, Registry


@dataclass
class FinetuneReport:
    name: str
    path: Path
    result: dict[str, Any]
    activated: bool
    gate: dict[str, Any] | None = None  # the gate's decision and both scores; None when it did not run

    def summary(self) -> str:
        r = self.result
        loss = f"{r['final_loss']:.4f}" if r.get("final_loss") is not None else "n/a"
        lines = []
        if self.gate and "scores" in self.gate:
            from kb.eval.gate import gate_lines

            lines = gate_lines(self.gate)
        state = " (active)" if self.activated else ""
        if self.gate and self.gate["decision"] == "refused":
            state = " (not activated: the gate found a regression; --force activates it anyway)"
        elif self.gate and self.gate["decision"] == "skipped":
            state += f" (gate skipped: {self.gate['reason']})"
        elif self.gate and self.gate["decision"] == "forced":
            state += " (forced past the gate)"
        skipped = r.get("skipped") or {}
        skips = (
            f", {sum(skipped.values())} skipped ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})"
            if skipped
            else ""
        )
        lines.append(
            f"finetune: {self.name} — {r.get('train_examples', '?')} examples{skips}, "
            f"{r['steps']} steps, final loss {loss}, "
            f"{r['tokens_per_s']:.0f} tok/s, peak memory {r['peak_memory_gib']:.1f} GiB → {self.path}" + state
        )
        return "\n".join(lines)


def finetune(
    cfg: FinetuneConfig,
    *,
    resume: bool = False,
    verbose: bool = False,
    progress: bool = True,
    kb_cfg: Config | None = None,
    force: bool = False,
) -> FinetuneReport:
    """`kb_cfg` configures the gate (eval.gate) and the answering it evaluates (default: the knowledge
    base's defaults); `force` activates the adapter even when the gate refuses it."""
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
        return _run(
            cfg,
            registry,
            name,
            run_dir,
            resume=resume,
            verbose=verbose,
            progress=progress,
            kb_cfg=kb_cfg,
            force=force,
        )
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
    kb_cfg: Config | None,
    force: bool,
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
    gate = None
    if cfg.activate:
        gate = run_gate_for(registry, name, train_path, kb_cfg, force=force, progress=progress)
    activated = cfg.activate and (gate is None or gate["decision"] != "refused")
    if activated:
        registry.activate(name)
    return FinetuneReport(name, info.path, result, activated, gate)


def run_gate_for(
    registry: Registry,
    name: str,
    train_path: Path,
    kb_cfg: Config | None,
    *,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Evaluate the published adapter `name` against the active model and record the decision in its
    meta.json. Returns the record: decision activated | refused | forced | skipped (no evaluation set);
    None when eval.gate.enabled is false."""
    from kb.config import load_config
    from kb.eval.gate import gate_sets, run_gate

    kb_cfg = kb_cfg or load_config(overrides=[f"kb_dir={registry.root.parent}"])
    if not kb_cfg.eval.gate.enabled:
        return None
    sets = gate_sets(kb_cfg, train_path)
    if not sets:
        record: dict[str, Any] = {
            "decision": "skipped",
            "reason": "no evaluation set (no synth validation_qa.jsonl, eval.gate.gold unset)",
        }
        registry.update_meta(name, gate=record)
        return record
    decision = run_gate(kb_cfg, name, registry.active_name(), sets, progress=progress)
    verdict = "activated" if decision.accepted else ("forced" if force else "refused")
    record = {"decision": verdict, **decision.to_dict(), "sets": {k: len(v) for k, v in sets.items()}}
    metrics = registry.get(name).metrics
    candidate = decision.scores["candidate"]
    registry.update_meta(
        name,
        gate=record,
        metrics={
            **metrics,
            "eval": {s: {m: candidate[s].get(m) for m in decision.metrics} for s in candidate},
        },
    )
    return record
