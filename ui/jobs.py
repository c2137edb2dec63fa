"""Background work started from the admin page: re-ingest (a thread) and fine-tuning (a process).

Re-ingest runs in a thread of the server process so it can share the loaded embedder; it builds a
new generation beside the live one (kb.store.Writer), so answering goes on meanwhile and switches
over at the next question after the commit. Progress comes from wrapping the embedder, because the
ingest pipeline has no progress callback: reading/chunking, then chunks embedded so far.

Fine-tuning runs `kb finetune` as a child process (it takes minutes to hours and its own memory),
logging to <kb_dir>/jobs/finetune-<time>.log with a .json beside it that records the command,
pid and exit code, so the page can show jobs started before a server restart too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ingest.pipeline import IngestReport, ingest
from kb.config import Config
from kb.embed.base import Embedder
from kb.errors import KBError


@dataclass
class IngestJob:
    paths: list[Path]
    started: float = field(default_factory=time.time)
    phase: str = "reading"  # reading → embedding
    embedded: int = 0
    finished: float | None = None
    report: IngestReport | None = None
    error: str = ""
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started


class _ProgressEmbedder(Embedder):
    """Passes batches to the real embedder and counts them for the progress display."""

    def __init__(self, inner: Embedder, job: IngestJob):
        self.inner, self.job = inner, job
        self.name, self.dim = inner.name, inner.dim

    def embed_batch(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        self.job.phase = "embedding"
        out = self.inner.embed_batch(texts, query=query)
        self.job.embedded += len(texts)
        return out


_INGEST: dict[str, IngestJob] = {}
_INGEST_LOCK = threading.Lock()


def ingest_job(kb_dir: str) -> IngestJob | None:
    """The running or most recent re-ingest of this knowledge base started by this process."""
    return _INGEST.get(str(Path(kb_dir).resolve()))


def start_ingest(cfg: Config, embedder: Embedder, paths: list[Path]) -> IngestJob | None:
    """Start mirroring `paths` into the knowledge base; None when one is already running here.
    (An ingest from the command line holds the store's lock: this job then fails with that message.)"""
    key = str(Path(cfg.kb_dir).resolve())
    with _INGEST_LOCK:
        current = _INGEST.get(key)
        if current is not None and current.running:
            return None
        job = IngestJob(paths=list(paths))
        _INGEST[key] = job

    def work() -> None:
        try:
            job.report = ingest(job.paths, cfg, _ProgressEmbedder(embedder, job), progress=False)
        except KBError as e:
            job.error = str(e)
        except Exception as e:  # the thread must always finish its job record, or the page waits forever
            job.error = f"{type(e).__name__}: {e}"
        finally:
            job.finished = time.time()

    job.thread = threading.Thread(target=work, name="kb-ui-ingest", daemon=True)
    job.thread.start()
    return job


# ---- fine-tuning -------------------------------------------------------------------------------

_PROCS: dict[int, subprocess.Popen] = {}  # children of this process, so they are reaped and stoppable


def jobs_dir(kb_dir: str) -> Path:
    return Path(kb_dir) / "jobs"


def finetune_command(passthrough: list[str], method: str, data: str, no_activate: bool) -> list[str]:
    cmd = [sys.executable, "-m", "kb.cli", "finetune", *passthrough, "--method", method]
    if data:
        cmd += ["--data", data]
    if no_activate:
        cmd.append("--no-activate")
    return cmd


def start_finetune(kb_dir: str, cmd: list[str]) -> Path | None:
    """Run `cmd` in the background with its output in a new log file; None if a job is running."""
    if any(j["running"] for j in finetune_jobs(kb_dir)):
        return None
    folder = jobs_dir(kb_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = folder / f"finetune-{stamp}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the log shows progress as it happens
    with open(log, "wb") as out:
        # Own session: stopping the job signals its whole group (torchrun workers included).
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    _PROCS[proc.pid] = proc
    meta = {"pid": proc.pid, "cmd": cmd, "started": time.time(), "log": log.name, "rc": None}
    log.with_suffix(".json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return log


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finetune_jobs(kb_dir: str) -> list[dict[str, Any]]:
    """Jobs recorded under <kb_dir>/jobs/, newest first, with `running` and the exit code if known."""
    folder = jobs_dir(kb_dir)
    if not folder.is_dir():
        return []
    out = []
    for meta_file in sorted(folder.glob("finetune-*.json"), reverse=True):
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        proc = _PROCS.get(meta["pid"])
        if proc is not None:
            rc = proc.poll()
            running = rc is None
            if rc is not None and meta.get("rc") is None:
                meta["rc"] = rc
                meta_file.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        else:
            # Started by an earlier server process: all we can tell is whether the pid still exists.
            running = meta.get("rc") is None and _alive(meta["pid"])
        out.append({**meta, "running": running, "path": str(folder / meta["log"])})
    return out


def stop_finetune(pid: int) -> bool:
    """Stop a job this process started (never an arbitrary pid read from a file)."""
    proc = _PROCS.get(pid)
    if proc is None or proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGTERM)
    return True


def tail(path: str | Path, lines: int = 40, max_bytes: int = 32768) -> str:
    """The last lines of a log; progress bars' carriage returns count as line ends."""
    p = Path(path)
    if not p.is_file():
        return ""
    with open(p, "rb") as f:
        f.seek(max(0, p.stat().st_size - max_bytes))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])
