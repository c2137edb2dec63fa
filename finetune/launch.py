"""Start the training ranks: one in-process run, or N processes under torchrun.

Multi-process runs go through torchrun (torch.distributed.run) rather than the deepspeed launcher:
the HF Trainer initialises DeepSpeed itself from TrainingArguments(deepspeed=...), and torchrun needs
no hostfile or ssh. On a CPU host the ranks use gloo; on GPUs, NCCL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kb.errors import KBError

# NVLink SHARP / multicast (NVLS) is off in NCCL, PyTorch's symmetric memory and NVSHMEM: on shared
# multi-GPU hosts a program that uses it can take the host's GPUs out of service, and it brings nothing
# at the message sizes of LoRA / prefix gradients or ZeRO's bucketed collectives.
NCCL_ENV = {
    "NCCL_NVLS_ENABLE": "0",
    "NCCL_NVLSTREE_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
}


class LaunchError(KBError):
    """A training process exited with an error."""


def launch(run_dir: Path, nproc: int, *, resume: bool = False) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "finetune.train",
        str(run_dir),
    ] + (["--resume"] if resume else [])
    env = {
        **os.environ,
        **NCCL_ENV,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise LaunchError(
            f"training with {nproc} processes failed (exit code {proc.returncode}); "
            f"the log above says why, checkpoints are in {run_dir / 'checkpoints'}"
        )
