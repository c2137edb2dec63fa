"""Errors raised by kb's library code. Only the CLI and the UI turn them into messages."""


class KBError(Exception):
    """Base class of every error kb raises on purpose."""


class ConfigError(KBError):
    """A configuration key or value is wrong; the message names the key and the bad value."""


class LoadError(KBError):
    """A document could not be loaded; the message names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class FileSkipped(LoadError):
    """A file left out on purpose: over a configured limit (ingest.max_*), empty, a scan without a text
    layer, password-protected, or a link not followed. The file is not broken; ingest reports it as
    skipped rather than failed."""


class StoreError(KBError):
    """The knowledge base directory is missing, locked, or inconsistent."""


class EmptyKnowledgeBase(StoreError):
    """No committed generation exists yet: run `kb ingest` first."""


class IngestLocked(StoreError):
    """Another ingest holds the knowledge base's write lock."""


class ModelError(KBError):
    """A model could not be found, verified or loaded."""


class DataError(KBError):
    """Input data (QA sets, training pairs) is malformed; the message names the file and line."""


class AccessError(KBError):
    """A user, password or token is unknown or wrong (the message never says which)."""
