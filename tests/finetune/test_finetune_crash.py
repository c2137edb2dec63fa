"""`kill -9` of `kb finetune` (tiny model) mid-training: the registry never lists a half-written
adapter, `--resume` continues from the last complete checkpoint (even after a second kill), and
folders of crashed runs do not pile up."""

from __future__ import annotations

import fcntl
import json
import os
import random
import subprocess
import time

from kb.registry import Registry
from tests.crashing import env, kb_cmd, kill_after, start
from tests.finetune.test_run import tiny_model, train_file  # noqa: F401 - fixtures

STEPS = 200  # long enough that a kill a second after a checkpoint always lands mid-training


def _cmd(tiny_model, train_file, kb, *extra):  # noqa: F811
    sets = {
        "max_steps": STEPS,
        "save_steps": 2,
        "save_total_limit": 2,
        "logging_steps": 1,
        "per_device_train_batch_size": 4,
        "learning_rate": 0.02,
    }
    args = ["finetune", "--model", str(tiny_model), "--data", str(train_file), "--kb", str(kb)]
    args += ["--method", "lora", "--json"]
    for key, value in sets.items():
        args += ["--set", f"finetune.training.{key}={value}"]
    return kb_cmd(*args, *extra)


def _steps_done(run_dir) -> int:
    ckpts = [p for p in (run_dir / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max((int(p.name.split("-")[-1]) for p in ckpts), default=0)


def test_kill_9_during_finetune_then_resume(tiny_model, train_file, tmp_path):  # noqa: F811
    kb = tmp_path / "kb"
    registry = Registry(kb)
    rng = random.Random(3)
    run_dir = kb / "models" / ".runs" / "lora-v1"
    seen = []
    for attempt in range(2):  # a fresh run killed, then its resume killed too
        extra = ("--resume",) if attempt else ()
        proc, t0 = start(_cmd(tiny_model, train_file, kb, *extra), b"it/s]")
        # Wait for a checkpoint past the last one, then kill at a random moment soon after.
        goal = _steps_done(run_dir) + 2
        while _steps_done(run_dir) < goal and proc.poll() is None and time.perf_counter() - t0 < 240:
            time.sleep(0.1)
        assert not kill_after(proc, rng.uniform(0.0, 1.0)), "finished before it could be killed"
        assert registry.list() == [] and registry.active_name() is None  # nothing half-written listed
        assert run_dir.is_dir() and registry.latest_run() == "lora-v1"
        seen.append(_steps_done(run_dir))
    assert seen[1] > seen[0] >= 2  # the resume went on from the first run's checkpoint

    done = subprocess.run(
        _cmd(tiny_model, train_file, kb, "--resume"), env=env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["name"] == "lora-v1" and report["steps"] == STEPS
    assert [a.name for a in registry.list()] == ["lora-v1"] and registry.active_name() == "lora-v1"
    assert not run_dir.exists()
    print("checkpoint steps at the kills:", seen)


def test_crashed_runs_do_not_pile_up(tmp_path):
    """Unfinished runs beyond keep_unfinished_runs, and leftovers of published ones, are removed
    when the next run starts; a run that is training (lock held) is never touched."""
    registry = Registry(tmp_path / "kb")
    runs = registry.root / ".runs"
    for i, name in enumerate(["lora-v1", "lora-v2", "lora-v3", "lora-v4", "lora-v5"]):
        (runs / name / "checkpoints").mkdir(parents=True)
        t = time.time() - 100 + i
        os.utime(runs / name, (t, t))
    (registry.root / "lora-v1").mkdir()  # published; its .runs folder is a crash leftover
    training = open(runs / "lora-v2" / "run.lock", "a")  # noqa: SIM115
    fcntl.flock(training, fcntl.LOCK_EX)
    try:
        removed = registry.prune_runs(keep=2, current="lora-v6")
    finally:
        training.close()
    assert sorted(removed) == ["lora-v1", "lora-v3"]
    assert sorted(p.name for p in runs.iterdir()) == ["lora-v2", "lora-v4", "lora-v5"]
