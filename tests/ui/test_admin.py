"""The admin page through streamlit's AppTest: lock, uploads, document list, re-ingest, models, evaluation."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kb.registry import Registry
from tests.ui.conftest import UIEnv
from ui import jobs

ADMIN = "admin.py"  # relative to ui/app.py, as AppTest.switch_page expects


def _admin(ui_env: UIEnv) -> AppTest:
    at = ui_env.app()
    return at.switch_page(ADMIN).run()


def _unlocked(ui_env: UIEnv, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("KB_ADMIN_PASSWORD", "s3cret")
    at = _admin(ui_env)
    at.text_input[0].input("s3cret")
    at.button[0].click().run()
    assert not at.exception and at.tabs
    return at


def _wait_for_ingest(ui_env: UIEnv, at: AppTest, kb_dir: str | None = None) -> AppTest:
    job = jobs.ingest_job(kb_dir or ui_env.cfg.kb_dir)
    assert job is not None
    deadline = time.time() + 30
    while job.running and time.time() < deadline:
        time.sleep(0.05)
    assert not job.running and not job.error, job.error
    return at.run()


def _sources(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["文档"])


def test_locked_without_a_configured_password(ui_env: UIEnv) -> None:
    at = _admin(ui_env)
    assert not at.exception
    assert "KB_ADMIN_PASSWORD_SHA256" in at.warning[0].value
    assert not at.text_input and not at.file_uploader and not at.tabs


def test_wrong_password_stays_locked_right_one_unlocks(
    ui_env: UIEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KB_ADMIN_PASSWORD_SHA256", hashlib.sha256(b"s3cret").hexdigest().upper())
    at = _admin(ui_env)
    at.text_input[0].input("guess")
    at.button[0].click().run()
    assert at.error[0].value == "密码错误。" and not at.tabs
    at.text_input[0].input("s3cret")
    at.button[0].click().run()
    assert at.tabs and at.file_uploader
    assert sorted(_sources(at)) == ["general/canteen.txt", "hr/leave.md", "it/vpn.md"]


def test_malformed_hash_keeps_it_locked(ui_env: UIEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_ADMIN_PASSWORD_SHA256", "not-a-hash")
    at = _admin(ui_env)
    assert "64" in at.error[0].value and not at.text_input


@pytest.mark.parametrize("name", ["../evil.md", "..\\evil.md", ".hidden.md", "sub/evil.md"])
def test_upload_refuses_unsafe_names(
    ui_env: UIEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    at = _unlocked(ui_env, monkeypatch)
    at.file_uploader[0].set_value((name, b"# Evil\n\nshould never be stored\n", "text/markdown"))
    at.run()
    [b for b in at.button if b.label == "保存并导入"][0].click().run()
    assert any(name in e.value and "已拒绝" in e.value for e in at.error)
    written = [p for p in tmp_path.rglob("*evil*")] + [p for p in tmp_path.rglob(".hidden*")]
    assert written == []
    assert jobs.ingest_job(ui_env.cfg.kb_dir) is None  # nothing saved, nothing re-ingested


def test_upload_reingest_and_delete_update_the_document_list(
    ui_env: UIEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _unlocked(ui_env, monkeypatch)
    text = "# 健身房\n\n公司健身房在3楼，每天早上6点开放。\n"
    at.file_uploader[0].set_value(("gym.md", text.encode(), "text/markdown"))
    at.run()
    [b for b in at.button if b.label == "保存并导入"][0].click().run()
    assert (ui_env.root / "uploads" / "gym.md").read_text(encoding="utf-8") == text
    at = _wait_for_ingest(ui_env, at)
    assert "uploads/gym.md" in _sources(at)
    assert any("导入完成" in s.value and "1 added" in s.value for s in at.success)

    at.selectbox(key="delete_source").set_value("uploads/gym.md")
    [b for b in at.button if b.label == "删除并重新导入"][0].click().run()
    assert not (ui_env.root / "uploads" / "gym.md").exists()
    at = _wait_for_ingest(ui_env, at)
    assert "uploads/gym.md" not in _sources(at)
    assert any("1 deleted" in s.value for s in at.success)


def test_reingest_button_picks_up_changed_files(ui_env: UIEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _unlocked(ui_env, monkeypatch)
    (ui_env.root / "hr" / "travel.md").write_text("# 差旅\n\n出差住宿标准每晚500元。\n", encoding="utf-8")
    [b for b in at.button if b.label == "重新导入全部文档"][0].click().run()
    at = _wait_for_ingest(ui_env, at)
    assert "hr/travel.md" in _sources(at)


def test_an_empty_knowledge_base_is_built_from_uploads(
    ui_env: UIEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "empty_kb"
    argv = list(ui_env.argv)
    argv[argv.index("--kb") + 1] = str(empty)
    monkeypatch.setattr(sys, "argv", argv)
    at = ui_env.app()
    assert "知识库还是空的" in at.info[0].value and not at.chat_input
    at = _unlocked(ui_env, monkeypatch)
    at.file_uploader[0].set_value(("gym.md", "# 健身房\n\n公司健身房在3楼。\n".encode(), "text/markdown"))
    at.run()
    [b for b in at.button if b.label == "保存并导入"][0].click().run()
    assert (empty / "uploads" / "gym.md").is_file()  # no ingest root yet: <kb_dir>/uploads
    at = _wait_for_ingest(ui_env, at, str(empty))
    assert _sources(at) == ["gym.md"]
    at.switch_page("chat.py").run()
    assert at.chat_input and not at.info


def _fake_adapter(kb_dir: str, name: str, f1: float) -> None:
    path = Path(kb_dir) / "models" / name
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    meta = {"name": name, "method": "lora", "base_model": "bundled:qwen2.5-0.5b", "created": time.time()}
    (path / "meta.json").write_text(json.dumps({**meta, "metrics": {"eval": {"f1": f1}}}))


def test_models_are_listed_and_activated(ui_env: UIEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_adapter(ui_env.cfg.kb_dir, "lora-v1", 0.41)
    _fake_adapter(ui_env.cfg.kb_dir, "lora-v2", 0.47)
    at = _unlocked(ui_env, monkeypatch)
    table = at.dataframe[1].value
    assert list(table["name"]) == ["lora-v1", "lora-v2"] and list(table["eval.f1"]) == [0.41, 0.47]
    at.selectbox(key="adapter_choice").set_value("lora-v2")
    at.button(key="activate_adapter").click().run()
    assert Registry(ui_env.cfg.kb_dir).active_name() == "lora-v2"
    assert any("lora-v2" in s.value for s in at.success)


def test_evaluation_summaries_are_shown(ui_env: UIEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Path(ui_env.cfg.kb_dir) / "eval" / "baseline"
    run.mkdir(parents=True)
    summary = {"n": 10, "retrieval": {"hit@5": 0.9}, "answer": {"contains": 0.6}, "refusal": None}
    (run / "summary.json").write_text(json.dumps(summary))
    at = _unlocked(ui_env, monkeypatch)
    table = at.dataframe[-1].value
    assert list(table["run"]) == ["baseline"] and list(table["retrieval.hit@5"]) == [0.9]


def test_finetune_job_runs_in_the_background_with_its_log(ui_env: UIEnv) -> None:
    kb_dir = ui_env.cfg.kb_dir
    log = jobs.start_finetune(kb_dir, ["python3", "-c", "print('step 1 loss 2.5'); print('done')"])
    assert log is not None and log.parent == Path(kb_dir) / "jobs"
    deadline = time.time() + 30
    while jobs.finetune_jobs(kb_dir)[0]["running"] and time.time() < deadline:
        time.sleep(0.05)
    (job,) = jobs.finetune_jobs(kb_dir)
    assert job["rc"] == 0 and jobs.tail(job["path"]).splitlines() == ["step 1 loss 2.5", "done"]


def test_finetune_form_starts_kb_finetune_with_the_servers_options(
    ui_env: UIEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_command = jobs.finetune_command
    built: list[list[str]] = []

    def harmless(*args, **kwargs) -> list[str]:
        built.append(real_command(*args, **kwargs))
        return ["python3", "-c", "print('training… done')"]  # the real run takes minutes to hours

    monkeypatch.setattr(jobs, "finetune_command", harmless)
    at = _unlocked(ui_env, monkeypatch)
    at.selectbox[-1].set_value("ptuning-v2")
    at.checkbox[0].check()
    at.button(key="FormSubmitter:finetune-开始微调").click().run()
    (cmd,) = built
    assert cmd[1:4] == ["-m", "kb.cli", "finetune"]
    assert cmd[cmd.index("--kb") + 1] == ui_env.cfg.kb_dir and "embedder.name=hashing" in cmd
    assert cmd[-3:] == ["--method", "ptuning-v2", "--no-activate"]
    deadline = time.time() + 30
    while jobs.finetune_jobs(ui_env.cfg.kb_dir)[0]["running"] and time.time() < deadline:
        time.sleep(0.05)
    at.run()
    assert any(".log" in e.label and "退出码 0" in e.label for e in at.expander)
    assert any("training… done" in c.value for c in at.code)
