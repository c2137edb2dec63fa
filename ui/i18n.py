"""Interface labels in Chinese and English. The sidebar toggle picks one (default Chinese); answers
follow the language of each question on their own (kb.prompt.language), whatever the toggle says."""

from __future__ import annotations

import streamlit as st

LANGS = {"zh": "中文", "en": "English"}
DEFAULT_LANG = "zh"
LANG_KEY = "ui_lang"

LABELS: dict[str, dict[str, str]] = {
    "app_title": {"zh": "企业知识库", "en": "Knowledge base"},
    "nav_chat": {"zh": "问答", "en": "Ask"},
    "nav_admin": {"zh": "管理", "en": "Admin"},
    "language": {"zh": "界面语言", "en": "Interface language"},
    # chat page
    "chat_title": {"zh": "知识库问答", "en": "Ask the knowledge base"},
    "chat_intro": {
        "zh": "用中文或英文提问，回答会附上来源文档。",
        "en": "Ask in Chinese or English; every answer lists the documents it comes from.",
    },
    "ask_placeholder": {"zh": "输入你的问题…", "en": "Type your question…"},
    "loading_model": {
        "zh": "首次启动：正在加载模型和知识库，请稍候…",
        "en": "First start: loading the model and the knowledge base…",
    },
    "empty_kb": {
        "zh": "知识库还是空的：请在“管理”页上传文档，或运行 `kb ingest 文件夹`。",
        "en": "The knowledge base is empty: upload documents on the Admin page, or run `kb ingest FOLDER`.",
    },
    "load_failed": {
        "zh": "无法加载知识库或模型：{error}",
        "en": "Cannot load the knowledge base or model: {error}",
    },
    "waiting_turn": {"zh": "正在回答其他问题，请稍候…", "en": "Another question is being answered; waiting…"},
    "searching": {"zh": "正在检索文档…", "en": "Searching the documents…"},
    "rewritten": {"zh": "按上下文检索为：{q}", "en": "Searched in context as: {q}"},
    "refused": {
        "zh": "知识库的文档中没有找到可靠的答案。下面是检索到的最接近的资料：",
        "en": "The documents do not reliably answer this. These are the closest passages found:",
    },
    "sources": {"zh": "来源", "en": "Sources"},
    "closest": {"zh": "最接近的资料", "en": "Closest passages"},
    "page": {"zh": "第 {page} 页", "en": "page {page}"},
    "document": {"zh": "文档", "en": "Document"},
    "heading": {"zh": "章节", "en": "Section"},
    "quote": {"zh": "引用原文", "en": "Quoted passage"},
    "download": {"zh": "下载原文件", "en": "Download the file"},
    "file_unavailable": {
        "zh": "原文件不在知识库的文档目录中，无法下载。",
        "en": "The original file is not in the knowledge base's folders; it cannot be downloaded.",
    },
    "answer_time": {"zh": "用时 {s:.1f} 秒 · {n} 个来源", "en": "answered in {s:.1f} s · {n} source(s)"},
    "refused_time": {"zh": "用时 {s:.1f} 秒 · 未作答", "en": "{s:.1f} s · not answered"},
    "helpful": {"zh": "这个回答有帮助吗？", "en": "Was this answer helpful?"},
    "comment": {"zh": "补充说明（可选）", "en": "Comment (optional)"},
    "send_comment": {"zh": "提交说明", "en": "Send comment"},
    "thanks": {"zh": "感谢反馈！", "en": "Thanks for the feedback!"},
    "new_chat": {"zh": "新对话", "en": "New conversation"},
    "kb_info": {
        "zh": "知识库：{files} 个文档，{chunks} 个片段（第 {gen} 代）",
        "en": "Knowledge base: {files} documents, {chunks} chunks (generation {gen})",
    },
    "model_info": {"zh": "模型：{model}", "en": "Model: {model}"},
    "answer_failed": {"zh": "回答失败：{error}", "en": "Answering failed: {error}"},
    # admin page
    "admin_title": {"zh": "知识库管理", "en": "Knowledge base administration"},
    "no_password": {
        "zh": "管理页已锁定：尚未配置管理员密码。启动前设置环境变量 `KB_ADMIN_PASSWORD_SHA256`"
        "（密码的 SHA-256 十六进制值，例如 `printf %s 密码 | sha256sum`）或 `KB_ADMIN_PASSWORD`，然后重新运行 `kb ui`。",
        "en": "The admin page is locked: no administrator password is configured. Set the environment variable "
        "`KB_ADMIN_PASSWORD_SHA256` (hex SHA-256 of the password, e.g. `printf %s PASSWORD | sha256sum`) "
        "or `KB_ADMIN_PASSWORD` before starting, then run `kb ui` again.",
    },
    "bad_hash": {
        "zh": "KB_ADMIN_PASSWORD_SHA256 不是 64 位十六进制值；管理页保持锁定。",
        "en": "KB_ADMIN_PASSWORD_SHA256 is not 64 hex digits; the admin page stays locked.",
    },
    "password": {"zh": "管理员密码", "en": "Administrator password"},
    "unlock": {"zh": "解锁", "en": "Unlock"},
    "wrong_password": {"zh": "密码错误。", "en": "Wrong password."},
    "lock": {"zh": "锁定管理页", "en": "Lock the admin page"},
    "tab_docs": {"zh": "文档", "en": "Documents"},
    "tab_models": {"zh": "模型", "en": "Models"},
    "tab_eval": {"zh": "评测", "en": "Evaluation"},
    "upload": {"zh": "上传文档", "en": "Upload documents"},
    "upload_help": {
        "zh": "允许的格式：{suffixes}；单个文件不超过 {mb:g} MB。保存到 {folder}，保存后自动重新导入。",
        "en": "Allowed: {suffixes}; at most {mb:g} MB each. Saved into {folder}, then re-ingested.",
    },
    "save_uploads": {"zh": "保存并导入", "en": "Save and ingest"},
    "saved": {"zh": "已保存：{name}", "en": "Saved: {name}"},
    "rejected": {"zh": "已拒绝 {name}：{reason}", "en": "Rejected {name}: {reason}"},
    "documents": {"zh": "文档列表", "en": "Documents"},
    "no_documents": {"zh": "知识库中还没有文档。", "en": "No documents in the knowledge base yet."},
    "col_source": {"zh": "文档", "en": "Source"},
    "col_chunks": {"zh": "片段数", "en": "Chunks"},
    "col_size": {"zh": "大小 (KB)", "en": "Size (KB)"},
    "col_ingested": {"zh": "最近导入时间", "en": "Last ingested"},
    "delete_doc": {"zh": "删除文档", "en": "Delete a document"},
    "delete": {"zh": "删除并重新导入", "en": "Delete and re-ingest"},
    "deleted": {"zh": "已删除 {name}", "en": "Deleted {name}"},
    "delete_failed": {"zh": "无法删除 {name}：{reason}", "en": "Cannot delete {name}: {reason}"},
    "reingest": {"zh": "重新导入全部文档", "en": "Re-ingest all documents"},
    "roots": {"zh": "文档目录：{roots}", "en": "Document folders: {roots}"},
    "ingest_running": {
        "zh": "正在导入（{phase}，已用 {s:.0f} 秒）。问答仍可正常使用，导入完成后自动切换到新版本。",
        "en": "Ingest running ({phase}, {s:.0f} s). Answering keeps working and switches to the new "
        "version when it completes.",
    },
    "phase_reading": {"zh": "读取和切分文件", "en": "reading and chunking files"},
    "phase_embedding": {"zh": "向量化 {n} 个片段", "en": "embedding {n} chunks"},
    "ingest_done": {"zh": "导入完成：{summary}", "en": "Ingest finished: {summary}"},
    "ingest_failed": {"zh": "导入失败：{error}", "en": "Ingest failed: {error}"},
    "ingest_busy": {"zh": "已有导入在运行，请等待完成。", "en": "An ingest is already running; wait for it."},
    "skipped_file": {"zh": "跳过 {source}：{reason}", "en": "Skipped {source}: {reason}"},
    "adapters": {"zh": "已注册的适配器", "en": "Registered adapters"},
    "no_adapters": {
        "zh": "还没有微调过的适配器；当前使用基础模型。",
        "en": "No fine-tuned adapters yet; answers use the base model.",
    },
    "base_model": {"zh": "（基础模型，不用适配器）", "en": "(base model, no adapter)"},
    "activate": {"zh": "启用", "en": "Activate"},
    "activated": {
        "zh": "已启用 {name}；下一个问题会加载它。",
        "en": "Activated {name}; the next question loads it.",
    },
    "active_now": {"zh": "当前启用：{name}", "en": "Active now: {name}"},
    "finetune": {
        "zh": "微调（后台运行 kb finetune）",
        "en": "Fine-tune (runs kb finetune in the background)",
    },
    "finetune_help": {
        "zh": "训练数据默认来自 `kb synth` 生成的 <kb>/synth/train.jsonl。在 CPU 上训练较慢，会占用问答的计算资源。",
        "en": "Training data defaults to <kb>/synth/train.jsonl from `kb synth`. Training on a CPU is slow "
        "and competes with answering.",
    },
    "method": {"zh": "方法", "en": "Method"},
    "data_path": {"zh": "训练数据（可选）", "en": "Training data (optional)"},
    "no_activate": {"zh": "训练后不自动启用", "en": "Do not activate when done"},
    "start_finetune": {"zh": "开始微调", "en": "Start fine-tuning"},
    "finetune_started": {"zh": "已启动，日志：{log}", "en": "Started; log: {log}"},
    "finetune_busy": {"zh": "已有微调任务在运行。", "en": "A fine-tuning job is already running."},
    "jobs": {"zh": "微调任务", "en": "Fine-tuning jobs"},
    "job_running": {"zh": "运行中", "en": "running"},
    "job_exit": {"zh": "已结束（退出码 {rc}）", "en": "finished (exit code {rc})"},
    "job_ended": {"zh": "已结束", "en": "ended"},
    "stop_job": {"zh": "停止", "en": "Stop"},
    "refresh": {"zh": "刷新", "en": "Refresh"},
    "eval_results": {
        "zh": "评测结果（<kb>/eval/*/summary.json）",
        "en": "Evaluation results (<kb>/eval/*/summary.json)",
    },
    "no_eval": {
        "zh": "还没有评测结果。运行 `kb eval corpus/qa.jsonl --out {dir}/eval/RUN` 生成。",
        "en": "No evaluation results yet. Run `kb eval corpus/qa.jsonl --out {dir}/eval/RUN` to create one.",
    },
    # sign-in (access.users_file) and the admin's search preview
    "sign_in": {"zh": "登录", "en": "Sign in"},
    "user_name": {"zh": "用户名", "en": "User name"},
    "user_password": {"zh": "密码", "en": "Password"},
    "sign_in_failed": {"zh": "用户名或密码错误。", "en": "Wrong user name or password."},
    "sign_in_first": {"zh": "请先在侧边栏登录。", "en": "Please sign in in the sidebar first."},
    "signed_in": {"zh": "已登录：{name}（{deps}）", "en": "Signed in as {name} ({deps})"},
    "public_only": {"zh": "仅公开文档", "en": "public documents only"},
    "public": {"zh": "公开", "en": "public"},
    "all_documents": {"zh": "全部文档", "en": "all documents"},
    "sign_out": {"zh": "退出登录", "en": "Sign out"},
    "preview": {"zh": "检索预览", "en": "Search preview"},
    "preview_help": {
        "zh": "以某个用户的权限检索：管理员看到全部文档，其他用户只看到公开文档和本部门的文档。",
        "en": "Search as a user sees it: the admin sees every document, others only public ones and "
        "their departments'.",
    },
    "view_as": {"zh": "查看身份", "en": "View as"},
    "as_admin": {"zh": "管理员（全部）", "en": "admin (everything)"},
    "as_public": {"zh": "未登录（公开）", "en": "anonymous (public)"},
    "query": {"zh": "检索词", "en": "Query"},
    "col_departments": {"zh": "部门", "en": "Departments"},
}


def lang() -> str:
    value = st.session_state.get(LANG_KEY, DEFAULT_LANG)
    return value if value in LANGS else DEFAULT_LANG


def t(key: str, **values: object) -> str:
    """The label in the interface language, formatted with `values`."""
    text = LABELS[key][lang()]
    return text.format(**values) if values else text


def language_toggle() -> None:
    """Sidebar switch between the Chinese and English interface; the choice lives in session state."""
    st.sidebar.radio(
        "界面语言 / Language",
        list(LANGS),
        format_func=LANGS.__getitem__,
        key=LANG_KEY,
        horizontal=True,
    )
