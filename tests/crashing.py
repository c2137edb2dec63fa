"""Helpers for the kill -9 tests: run a `kb` command as a child process, know when it got to work."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}


def kb_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kb.cli", *args]


def start(cmd: list[str], marker: bytes) -> tuple[subprocess.Popen, float]:
    """Start `cmd`; return it and the moment `marker` (a progress bar's label) appeared on its
    stderr, i.e. when it got past its imports to the work. The rest of stderr is drained."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = b""
    while marker not in seen:
        byte = proc.stderr.read(1)
        if not byte:
            break
        seen = (seen + byte)[-64:]
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, time.perf_counter()


def kill_after(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL `proc` after `delay` seconds; True when it had already exited by itself."""
    time.sleep(delay)
    finished = proc.poll() is not None
    if not finished:
        proc.kill()
    proc.wait(timeout=60)
    return finished
