"""Helpers shared by the CLI's command modules."""

from __future__ import annotations

import argparse

from kb.config import Config


def config_from_args(args: argparse.Namespace) -> Config:
    from kb.config import load_config

    overrides = [s for s in args.set if not s.startswith("finetune.")]  # those go to the fine-tuning config
    if args.kb:
        overrides.append(f"kb_dir={args.kb}")
    if getattr(args, "base", False):
        overrides.append("generator.adapter=none")
    elif getattr(args, "adapter", None):
        overrides.append(f"generator.adapter={args.adapter}")
    return load_config(args.config, overrides)


def add_user_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--as", dest="as_user", metavar="USER", help="see only what USER may read (access.users_file)"
    )
    g.add_argument(
        "--departments",
        metavar="A,B",
        help="see only public documents and those of these departments ('' = public only)",
    )


def principal_from_args(args: argparse.Namespace, cfg: Config):
    """The Principal a command runs as: --as USER, --departments, or None (unrestricted)."""
    from kb.access import Principal, load_users, norm_departments
    from kb.errors import ConfigError

    if getattr(args, "as_user", None):
        users = load_users(cfg.access.users_file)
        if users is None:
            raise ConfigError("--as needs access.users_file (a users YAML, see kb/access.py)")
        return users.get(args.as_user)
    if getattr(args, "departments", None) is not None:
        deps = norm_departments([d for d in args.departments.split(",") if d.strip()], "--departments")
        return Principal("cli", frozenset(deps))
    return None
