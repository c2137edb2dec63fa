"""The `kb` command. Imports are lazy so `kb --help` is instant; library errors become one-line
messages here and nowhere else."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kb.cli_common import add_user_options, config_from_args, principal_from_args
from kb.cli_eval import add_eval_parsers, cmd_eval, cmd_eval_set
from kb.cli_refresh import cmd_finetune, cmd_models, cmd_synth


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", help="YAML file with changes from the defaults (default: ./kb.yaml if present)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. retrieval.k=8",
    )
    p.add_argument("--kb", help="knowledge base directory (config kb_dir)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="kb", description="Enterprise knowledge base: ingest, search, ask, evaluate."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("ingest", help="ingest documents (incremental: only changed files are processed)")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--keep-missing", action="store_true", help="do not delete documents missing from PATHS")
    _common(p)

    p = sub.add_parser("search", help="hybrid search (dense + BM25, fused)")
    p.add_argument("query")
    p.add_argument("--k", type=int)
    add_user_options(p)
    _common(p)

    p = sub.add_parser("ask", help="answer a question from the documents, with citations")
    p.add_argument("question")
    p.add_argument("--no-retrieval", action="store_true", help="ask the model alone, without documents")
    _adapter(p)
    add_user_options(p)
    _common(p)

    p = sub.add_parser("chat", help="interactive question loop in the terminal")
    p.add_argument("--no-retrieval", action="store_true")
    add_user_options(p)
    _common(p)

    add_eval_parsers(sub, _common, _adapter)

    p = sub.add_parser(
        "synth", help="synthesize instruction pairs (RAFT-style) from the knowledge base's chunks"
    )
    p.add_argument("--out", type=Path, help="output folder (default <kb>/synth)")
    p.add_argument("--per-chunk", type=int, default=2, help="questions per chunk and generator")
    p.add_argument("--format", choices=["conversations", "alpaca"], default="conversations")
    p.add_argument("--no-llm", action="store_true", help="rule-based generator only (no model needed; fast)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--reply",
        choices=["short", "sentence"],
        default="short",
        help="assistant turns: the fact in a few words where a pair has one (default), or the sentence",
    )
    _common(p)

    p = sub.add_parser("finetune", help="tune the chat model on instruction pairs; publishes a new adapter")
    p.add_argument("--method", choices=["lora", "ptuning-v2"])
    p.add_argument("--model", help="base model: bundled:<name>, a directory, a hub id or modelscope:<id>")
    p.add_argument("--data", help="training JSONL (default: <kb>/synth/train.jsonl from `kb synth`)")
    p.add_argument("--gpus", type=int, help="processes to train with (torchrun; DeepSpeed with --deepspeed)")
    p.add_argument("--deepspeed", help="DeepSpeed config: zero2, zero3, zero3_offload or a .json path")
    p.add_argument("--name", help="adapter name (default <method>-v<N>)")
    p.add_argument(
        "--resume", action="store_true", help="continue the last unfinished run from its checkpoint"
    )
    p.add_argument("--no-activate", action="store_true", help="publish the adapter without activating it")
    p.add_argument(
        "--force",
        action="store_true",
        help="activate the adapter even if the evaluation gate finds a regression",
    )
    p.add_argument("--verbose", action="store_true", help="print token → label for the first example")
    p.add_argument(
        "--finetune-config", dest="ft_config", help="fine-tuning YAML (finetune/configs/*.yaml or a path)"
    )
    _common(p)

    p = sub.add_parser("models", help="list, activate or merge adapters in the model registry")
    msub = p.add_subparsers(dest="action", required=True)
    q = msub.add_parser("list")
    _common(q)
    q = msub.add_parser("activate")
    q.add_argument("name", help="adapter name, or 'none' for the base model")
    _common(q)
    q = msub.add_parser("merge", help="merge a LoRA adapter into its base model and save the result")
    q.add_argument("name")
    q.add_argument("--out", type=Path, required=True)
    _common(q)
    _ui_parsers(sub)

    p = sub.add_parser("migrate", help="move the knowledge base to another store backend (no re-embedding)")
    p.add_argument("--to", required=True, help="target backend: milvus or faiss")
    p.add_argument(
        "uri", nargs="?", default="", help="milvus: http://host:19530 or a .db file (default <kb>/milvus.db)"
    )
    p.add_argument("--collection", default="", help="milvus: collection name prefix (default kb_<random id>)")
    _common(p)
    sub.add_parser(
        "passwd", help="hash a password for a user entry of access.users_file (read from stdin/tty)"
    )
    return ap


def _adapter(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--adapter", help="answer with this adapter from the registry (default: the active one)")
    g.add_argument("--base", action="store_true", help="answer with the base model, no adapter")


def main(argv: list[str] | None = None) -> int:
    import os

    # OpenMP threads that spin while waiting collapse throughput when the 2 cores are shared with other
    # processes (measured: a 0.13 s decoding step became 0.5 s). Must be set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    import logging

    from kb.errors import KBError

    # Libraries (pypdf, transformers) log recoverable oddities; the CLI reports outcomes itself.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")

    try:
        return COMMANDS[args.cmd](args)
    except KBError as e:
        print(f"kb {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kb {args.cmd}: interrupted", file=sys.stderr)
        return 130


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.pipeline import ingest
    from kb.embed import get_embedder

    cfg = config_from_args(args)
    report = ingest(args.paths, cfg, lambda: get_embedder(cfg.embedder), delete_missing=not args.keep_missing)
    for source, reason in report.skipped:
        print(f"skipped {source}: {reason}", file=sys.stderr)
    for source, reason in report.failed:
        print(f"failed {source}: {reason}", file=sys.stderr)
    print(json.dumps(report.to_json()) if args.json else report.summary())
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from kb.service import open_retriever

    cfg = config_from_args(args)
    hits = open_retriever(cfg).search(args.query, args.k, user=principal_from_args(args, cfg))
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False))
        return 0
    for n, h in enumerate(hits, start=1):
        c = h.chunk
        where = (
            c.source
            + (f" p.{c.page}" if c.page else "")
            + (f" — {' > '.join(c.headings)}" if c.headings else "")
        )
        print(f"[{n}] {h.score:.4f}  {where}\n    {c.text[:200].replace(chr(10), ' ')}")
    print(f"{len(hits)} hits")
    return 0


def _print_answer(ans, as_json: bool, streamed: bool) -> None:
    if as_json:
        print(json.dumps(ans.to_dict(), ensure_ascii=False))
        return
    if not streamed:
        print(ans.answer)
    else:
        print()
        if ans.why and not ans.refused:  # the streamed answer was replaced by a quoted source sentence
            print("↳ not supported by the sources; they say:")
            print(ans.answer)
    for c in ans.citations:
        print(
            f"  [{c.n}] {c.source}"
            + (f" p.{c.page}" if c.page else "")
            + (f" — {c.heading}" if c.heading else "")
        )
    status = "refused (no answer in the documents)" if ans.refused else f"{len(ans.citations)} source(s)"
    print(f"answered in {ans.seconds:.1f}s, {status}", file=sys.stderr)


def cmd_ask(args: argparse.Namespace) -> int:
    from kb.service import open_answerer

    cfg = config_from_args(args)
    user = principal_from_args(args, cfg)
    answerer = open_answerer(cfg, retrieval=not args.no_retrieval)
    on_token = None if args.json else (lambda s: print(s, end="", flush=True))
    ans = answerer.answer(args.question, retrieval=not args.no_retrieval, on_token=on_token, user=user)
    _print_answer(ans, args.json, streamed=on_token is not None)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from kb.service import open_answerer

    cfg = config_from_args(args)
    user = principal_from_args(args, cfg)
    print("loading the model…", file=sys.stderr)
    answerer = open_answerer(cfg, retrieval=not args.no_retrieval)
    print("Ask a question (empty line or Ctrl-D to quit).", file=sys.stderr)
    n = 0
    while True:
        try:
            q = input("\n? ").strip()
        except EOFError:
            break
        if not q:
            break
        ans = answerer.answer(
            q, retrieval=not args.no_retrieval, on_token=lambda s: print(s, end="", flush=True), user=user
        )
        _print_answer(ans, False, streamed=True)
        n += 1
    print(f"chat: {n} question(s) answered", file=sys.stderr)
    return 0


def _ui_parsers(sub) -> None:
    p = sub.add_parser("ui", help="serve the chat and admin web pages (Streamlit) on 127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    _common(p)

    p = sub.add_parser("feedback", help="answer feedback collected by the chat page")
    fsub = p.add_subparsers(dest="action", required=True)
    q = fsub.add_parser("export", help="feedback as QA JSONL (the format kb eval reads), marked for review")
    q.add_argument("--out", type=Path, help="output file (default: standard output)")
    _common(q)


def cmd_ui(args: argparse.Namespace) -> int:
    import math
    import os

    import ui

    cfg = config_from_args(args)  # a bad config fails here as one line, not inside the web page
    passthrough = ["--kb", cfg.kb_dir, *(["--config", args.config] if args.config else [])]
    passthrough += [x for s in args.set for x in ("--set", s)]
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(Path(ui.__file__).parent / "app.py"),
        "--server.headless=true",
        "--server.address=127.0.0.1",  # employees reach it through a reverse proxy, never directly
        f"--server.port={args.port}",
        "--server.fileWatcherType=none",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=viewer",  # no developer menu or deploy button for employees
        f"--server.maxUploadSize={max(1, math.ceil(cfg.ingest.max_file_mb))}",
        "--",
        *passthrough,
    ]
    print(f"kb ui: serving http://127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    # Replace this process: a stop signal then reaches the server itself, with no orphan left behind.
    os.execv(sys.executable, cmd)
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from ui.feedback import export_lines

    cfg = config_from_args(args)
    lines = list(export_lines(cfg.kb_dir))
    if not args.out:
        for line in lines:
            print(line)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    print(
        f'feedback export: {len(lines)} item(s) → {args.out}, marked "review": "pending" '
        '(set "approved" after review, then `kb eval-set append GOLD.jsonl FILE`)',
        file=sys.stderr,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from kb.store.migrate import migrate

    cfg = config_from_args(args)
    report = migrate(
        cfg.kb_dir, args.to, args.uri, collection=args.collection, keep=cfg.ingest.keep_generations
    )
    print(json.dumps(report.to_json()) if args.json else report.summary())
    if cfg.store.backend not in ("", args.to):
        print(
            f"note: your config sets store.backend={cfg.store.backend}; remove it (the manifest decides)",
            file=sys.stderr,
        )
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    import getpass

    from kb.access import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("kb passwd: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("kb passwd: empty password", file=sys.stderr)
        return 2
    print(f'password: "{hash_password(password)}"')
    print("kb passwd: paste the line into the user's entry of access.users_file", file=sys.stderr)
    return 0


COMMANDS = {
    "ingest": cmd_ingest,
    "search": cmd_search,
    "ask": cmd_ask,
    "chat": cmd_chat,
    "eval": cmd_eval,
    "eval-set": cmd_eval_set,
    "synth": cmd_synth,
    "finetune": cmd_finetune,
    "models": cmd_models,
    "ui": cmd_ui,
    "feedback": cmd_feedback,
    "migrate": cmd_migrate,
    "passwd": cmd_passwd,
}

if __name__ == "__main__":
    sys.exit(main())
