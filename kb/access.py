"""Department access control: who may read which chunks.

A chunk carries `departments` (from its document's folder or a `.kbaccess` file, see
ingest/access.py); an empty list means public. A reader asks with the departments of a Principal:
`None` means unrestricted (the admin, or the CLI when no --as/--departments is given); otherwise a
chunk is visible iff it is public or shares a department with the reader. The store applies this
inside the vector and keyword searches, so top-k is filled with visible chunks only.

Users live in a YAML file (config `access.users_file`), never in kb.yaml:

    users:
      alice: {departments: [hr], password: "pbkdf2_sha256$200000$<salt hex>$<hash hex>"}
      bob:   {departments: [it, finance], token_sha256: "<hex sha256 of an API token>"}
      carol: {admin: true, password: "..."}

`kb passwd` prints a password entry. Passwords are salted PBKDF2 (compared with hmac.compare_digest,
as the admin password on the admin page); tokens are long random strings, so a plain sha256 suffices.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kb.errors import AccessError, ConfigError

Departments = frozenset[str] | None  # None = unrestricted
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_ITERATIONS = 200_000


def norm_departments(values: Iterable[str], where: str = "departments") -> list[str]:
    """Sorted, lower-cased, de-duplicated department names; a malformed name is a ConfigError."""
    out = set()
    for v in values:
        name = str(v).strip().lower()
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: bad department name {v!r} (letters, digits, _ . -)")
        out.add(name)
    return sorted(out)


@dataclass(frozen=True)
class Principal:
    """Who is asking. departments None = sees everything (admin / CLI without --as)."""

    name: str
    departments: Departments = frozenset()
    admin: bool = False

    @property
    def effective(self) -> Departments:
        return None if self.admin else self.departments


UNRESTRICTED = Principal("admin", None, admin=True)
ANONYMOUS = Principal("anonymous", frozenset())  # public documents only


def departments_of(user: Principal | None) -> Departments:
    """The departments retrieval filters by; no user = unrestricted."""
    return None if user is None else user.effective


def visible(chunk_departments: Iterable[str], departments: Departments) -> bool:
    """The rule, in one place: public chunks and chunks sharing a department are visible."""
    if departments is None:
        return True
    tags = set(chunk_departments)
    return not tags or bool(tags & departments)


def hash_password(password: str, salt: bytes | None = None, iterations: int = _ITERATIONS) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, expected = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), bytes.fromhex(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected.lower())


@dataclass
class UserEntry:
    name: str
    departments: list[str] = field(default_factory=list)
    admin: bool = False
    password: str = ""  # hash_password() output
    token_sha256: str = ""

    def principal(self) -> Principal:
        return Principal(self.name, frozenset(self.departments), self.admin)


class Users:
    """The users file. Every lookup that fails raises AccessError with the same message, so a
    wrong name and a wrong password cannot be told apart."""

    def __init__(self, entries: dict[str, UserEntry]):
        self.entries = entries

    @classmethod
    def load(cls, path: str | os.PathLike) -> Users:
        from kb.config import read_yaml

        data = read_yaml(path)
        raw = data.get("users")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a 'users' mapping")
        entries = {}
        for name, spec in raw.items():
            spec = spec or {}
            unknown = set(spec) - {"departments", "admin", "password", "token_sha256"}
            if unknown:
                raise ConfigError(f"{path}: users.{name}: unknown key(s) {', '.join(sorted(unknown))}")
            entries[str(name)] = UserEntry(
                str(name),
                norm_departments(spec.get("departments") or [], f"{path}: users.{name}.departments"),
                bool(spec.get("admin", False)),
                str(spec.get("password", "")),
                str(spec.get("token_sha256", "")).lower(),
            )
        return cls(entries)

    def get(self, name: str) -> Principal:
        """The principal for a name, without a password (the CLI's --as: whoever runs the CLI can
        read the knowledge base files anyway; --as is for seeing what a user would see)."""
        if name not in self.entries:
            raise AccessError(f"unknown user {name!r}")
        return self.entries[name].principal()

    def login(self, name: str, password: str) -> Principal:
        entry = self.entries.get(name)
        # Hash even for an unknown name, so timing does not tell which names exist.
        stored = entry.password if entry and entry.password else hash_password("", b"\0" * 16, 1)
        if not check_password(password, stored) or entry is None or not entry.password:
            raise AccessError("wrong user name or password")
        return entry.principal()

    def by_token(self, token: str) -> Principal:
        given = hashlib.sha256(token.encode("utf-8")).hexdigest()
        for entry in self.entries.values():
            if entry.token_sha256 and hmac.compare_digest(given, entry.token_sha256):
                return entry.principal()
        raise AccessError("unknown token")


def load_users(path: str) -> Users | None:
    """The configured users file, or None when access.users_file is empty."""
    if not path:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"access.users_file: {path} not found")
    return Users.load(path)
