"""CLI commands of evaluation: `kb eval` (a single run, the matrix, the report) and `kb eval-set`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kb.cli_common import add_user_options, config_from_args, principal_from_args
from kb.config import Config
from kb.errors import ConfigError

if TYPE_CHECKING:  # the CLI imports evaluation code lazily, so `kb --help` stays instant
    from kb.eval.matrix import Run
    from kb.eval.runner import QAItem

Adder = Callable[[argparse.ArgumentParser], None]


def add_eval_parsers(sub: argparse._SubParsersAction, common: Adder, adapter: Adder) -> None:
    p = sub.add_parser("eval", help="evaluate retrieval and answers on a QA JSONL file")
    p.add_argument("qa", type=Path)
    p.add_argument("--retrieval-only", action="store_true")
    p.add_argument("--no-retrieval", action="store_true")
    p.add_argument("--limit", type=int, help="evaluate the first N questions only")
    p.add_argument("--out", type=Path, help="write per-item results (JSONL) and the resolved config here")
    p.add_argument(
        "--matrix",
        action="store_true",
        help="{base model, active adapter} × {with, without retrieval} on the same questions, one table",
    )
    p.add_argument("--adapters", help="adapters to compare, comma-separated (implies --matrix)")
    p.add_argument("--report", type=Path, help="write a Markdown + HTML report with plots into this folder")
    adapter(p)
    add_user_options(p)
    common(p)

    p = sub.add_parser("eval-set", help="maintain QA gold sets")
    esub = p.add_subparsers(dest="action", required=True)
    q = esub.add_parser(
        "append", help='append the approved items ("review": "approved") of a reviewed feedback export'
    )
    q.add_argument("gold", type=Path, help="the gold set (QA JSONL); created when missing")
    q.add_argument("reviewed", type=Path, help="a `kb feedback export` file after review")
    common(q)


def cmd_eval(args: argparse.Namespace) -> int:
    from kb.eval.runner import read_qa

    cfg = config_from_args(args)
    items = read_qa(args.qa)
    items = items[: args.limit] if args.limit else items
    if args.matrix or args.adapters:
        for flag in ("retrieval_only", "no_retrieval", "adapter", "base"):
            if getattr(args, flag):
                raise ConfigError(
                    f"--{flag.replace('_', '-')} cannot be combined with --matrix/--adapters "
                    "(the matrix runs every configuration itself)"
                )
        return _matrix(args, cfg, items)
    return _single(args, cfg, items)


def _single(args: argparse.Namespace, cfg: Config, items: list[QAItem]) -> int:
    from kb.eval.judge import open_judge
    from kb.eval.matrix import BASE, Run
    from kb.eval.runner import evaluate, format_table
    from kb.service import active_adapter, open_answerer, open_retriever

    retrieval, generate = not args.no_retrieval, not args.retrieval_only
    if generate:
        answerer = open_answerer(cfg, retrieval=retrieval)
        adapter = active_adapter(cfg) if cfg.generator.name == "hf" else None
        model = adapter.name if adapter else BASE
    else:
        from kb.answer import Answerer
        from kb.generate.fake import FakeGenerator

        answerer, model = Answerer(open_retriever(cfg), FakeGenerator(), cfg), "retrieval"
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        cfg.dump(args.out / "config.yaml")
    summary, results = evaluate(
        items,
        answerer,
        retrieval=retrieval,
        generate=generate,
        out_dir=args.out,
        judge=open_judge(cfg) if generate and retrieval else None,
        user=principal_from_args(args, cfg),
    )
    if args.report:
        _report(args, cfg, [Run(model, retrieval, summary, results)])
    print(json.dumps(summary) if args.json else format_table(summary))
    return 0


def _matrix(args: argparse.Namespace, cfg: Config, items: list[QAItem]) -> int:
    from kb.eval.judge import open_judge
    from kb.eval.matrix import format_matrix, plan_models, run_matrix
    from kb.registry import Registry
    from kb.service import open_generator, open_retriever

    names = [a.strip() for a in args.adapters.split(",") if a.strip()] if args.adapters else None
    registry = Registry(cfg.kb_dir)
    for name in names or []:
        registry.get(name)  # an unknown name fails before any model loads
    models, note = plan_models(registry.active_name(), names)
    if note:
        print(f"eval: {note}", file=sys.stderr)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        cfg.dump(args.out / "config.yaml")
    runs = run_matrix(
        items,
        cfg,
        models,
        open_generator,
        open_retriever(cfg),
        judge=open_judge(cfg),
        out_dir=args.out,
        user=principal_from_args(args, cfg),
    )
    out = {"matrix": [r.row() for r in runs], **({"note": note} if note else {})}
    if args.out:
        (args.out / "matrix.json").write_text(json.dumps(out, indent=2, ensure_ascii=False), encoding="utf-8")
    if args.report:
        _report(args, cfg, runs)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(format_matrix(runs))
        print(f"eval: {len(runs)} configurations × {len(items)} questions" + (f" ({note})" if note else ""))
    return 0


def _report(args: argparse.Namespace, cfg: Config, runs: list[Run]) -> None:
    from kb.eval.report import write_report

    paths = write_report(
        args.report, runs, title=f"kb eval {args.qa}", resamples=cfg.eval.bootstrap, seed=cfg.eval.seed
    )
    print(f"eval: report → {', '.join(str(p) for p in paths)}", file=sys.stderr)


def cmd_eval_set(args: argparse.Namespace) -> int:
    from kb.eval.goldset import append_reviewed

    config_from_args(args)  # a bad --config/--set fails the same way as in every command
    report = append_reviewed(args.gold, args.reviewed)
    print(json.dumps(report.to_json()) if args.json else report.summary())
    return 0
