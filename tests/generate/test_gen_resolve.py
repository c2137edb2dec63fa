"""generator.model specs → something from_pretrained accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb.errors import ModelError
from kb.generate import bundled
from kb.generate.resolve import resolve_model


def test_local_directory_is_itself(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == tmp_path


def test_missing_local_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model directory not found") as err:
        resolve_model(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(err.value)
    with pytest.raises(ModelError, match="not found"):
        resolve_model("./models/qwen/latest")


def test_file_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"x")
    with pytest.raises(ModelError, match="must be a directory"):
        resolve_model(str(tmp_path / "model.gguf"))


def test_hub_id_passes_through() -> None:
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_model("gpt2") == "gpt2"


def test_empty_spec() -> None:
    with pytest.raises(ModelError, match="empty"):
        resolve_model("  ")


def test_unknown_bundled_name_lists_known() -> None:
    with pytest.raises(
        ModelError,
        match=r"bundled:nope: unknown bundled model \(known: qwen2\.5-0\.5b, qwen2\.5-1\.5b, smollm2",
    ):
        resolve_model("bundled:nope")


def test_bundled_goes_through_ensure_bundled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bundled, "ensure_bundled", lambda name: tmp_path / name)
    assert resolve_model("bundled:smollm2-135m") == tmp_path / "smollm2-135m"


def test_modelscope_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    modelscope = pytest.importorskip("modelscope")
    asked: list[str] = []

    def fake_download(model_id: str) -> str:
        asked.append(model_id)
        return str(tmp_path)

    monkeypatch.setattr(modelscope, "snapshot_download", fake_download)
    assert resolve_model("modelscope:Qwen/Qwen2.5-0.5B-Instruct") == tmp_path
    assert asked == ["Qwen/Qwen2.5-0.5B-Instruct"]


def test_modelscope_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    modelscope = pytest.importorskip("modelscope")

    def offline(model_id: str) -> str:
        raise ConnectionError("Failed to resolve 'modelscope.cn'")

    monkeypatch.setattr(modelscope, "snapshot_download", offline)
    with pytest.raises(ModelError, match=r"modelscope:Qwen/X: download failed .*network"):
        resolve_model("modelscope:Qwen/X")


def test_modelscope_needs_an_id() -> None:
    with pytest.raises(ModelError, match="needs a model id"):
        resolve_model("modelscope:")
