"""One GPU per training process: a single process on a multi-GPU host must not fall into DataParallel."""

from __future__ import annotations

from types import SimpleNamespace

from finetune.train import one_gpu_per_process


def test_single_process_on_a_multi_gpu_host_uses_one_gpu(monkeypatch, capsys):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = SimpleNamespace(n_gpu=2, _n_gpu=2)
    one_gpu_per_process(args)
    assert args._n_gpu == 1 and "1 of 2 GPUs" in capsys.readouterr().err


def test_ranks_and_single_gpu_hosts_are_left_alone(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")  # a torchrun rank: TrainingArguments already reports 1
    ranked = SimpleNamespace(n_gpu=2, _n_gpu=2)
    one_gpu_per_process(ranked)
    monkeypatch.delenv("WORLD_SIZE")
    single = SimpleNamespace(n_gpu=1, _n_gpu=1)
    one_gpu_per_process(single)
    assert (ranked._n_gpu, single._n_gpu) == (2, 1) and capsys.readouterr().err == ""
