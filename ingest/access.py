"""Department tags of a document at ingest: a `.kbaccess` file, else the top-folder mapping, else public.

A `.kbaccess` file is YAML in a folder of the ingested tree and applies to that folder and everything
below it; the nearest one above a document wins (so a subfolder can narrow or widen its parent):

    departments: [finance]        # only the finance department may read these documents
    departments: []               # public, even if access.folders restricts the top folder

Without one, `access.folders` maps the first folder of the document's source (its path under the
ingested root) to departments: `{finance: [finance], hr: [hr]}`. Anything else is public.

Tags are recorded per chunk. Changing them (editing a .kbaccess or the mapping) re-labels the stored
chunks at the next `kb ingest` without loading or embedding the documents again. A .kbaccess that
cannot be read fails closed: the documents under it are reported as failed and not ingested.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from kb.access import norm_departments
from kb.config import AccessConfig
from kb.errors import ConfigError, LoadError

SIDECAR = ".kbaccess"


class DepartmentLabels:
    def __init__(self, cfg: AccessConfig):
        self.folders = cfg.folders
        self._sidecars: dict[Path, list[str] | None] = {}  # folder → its .kbaccess departments, if any

    def _sidecar(self, folder: Path) -> list[str] | None:
        if folder not in self._sidecars:
            f = folder / SIDECAR
            if not f.is_file():
                self._sidecars[folder] = None
            else:
                try:
                    data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
                    if not isinstance(data, dict) or set(data) - {"departments"}:
                        raise ConfigError("expected a mapping with the one key 'departments'")
                    deps = data.get("departments") or []
                    if isinstance(deps, str):
                        deps = [deps]
                    if not isinstance(deps, list):
                        raise ConfigError(f"departments: expected a list, got {deps!r}")
                    self._sidecars[folder] = norm_departments(deps, str(f))
                except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError) as e:
                    raise LoadError(
                        str(f), f"unreadable access file ({e}); documents below it skipped"
                    ) from None
        return self._sidecars[folder]

    def departments(self, path: Path, source: str) -> list[str]:
        """Departments for the file at `path`, whose source (relative to its ingest root) is `source`."""
        parts = source.split("/")
        root = path.parents[len(parts) - 1] if len(parts) > 1 else path.parent
        folder = path.parent
        while True:
            found = self._sidecar(folder)
            if found is not None:
                return found
            if folder == root or folder == folder.parent:
                break
            folder = folder.parent
        return list(self.folders.get(parts[0], [])) if len(parts) > 1 else []
