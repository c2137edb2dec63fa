"""Per-generation map from departments to chunk rows, so a search can filter inside the index.

Built once when a Store opens a generation (one pass over the `departments` column). For a reader's
departments it gives the sorted visible rows (for a FAISS IDSelectorBatch) and a boolean mask over
the keyword index's rows (for BM25Index.search); both are cached per department set, since a
deployment has few distinct sets. None means "every row is visible", and lets searches skip the filter.
"""

from __future__ import annotations

import numpy as np

from kb.access import Departments


class RowAccess:
    def __init__(self, labels: list[tuple[int, list[str]]], keyword_rows: np.ndarray):
        """labels: (row, departments) for every chunk of the generation ([] = public)."""
        self.all_rows = np.asarray(sorted(r for r, _ in labels), np.int64)
        self.restricted = np.asarray(sorted(r for r, d in labels if d), np.int64)
        grouped: dict[str, list[int]] = {}
        for row, deps in labels:
            for d in deps:
                grouped.setdefault(d, []).append(row)
        self.by_department = {d: np.asarray(sorted(rows), np.int64) for d, rows in grouped.items()}
        self.keyword_rows = np.asarray(keyword_rows, np.int64)
        self._rows: dict[frozenset[str], np.ndarray | None] = {}
        self._masks: dict[frozenset[str], np.ndarray | None] = {}
        self._selectors: dict[frozenset[str], tuple] = {}

    def hidden_rows(self, departments: frozenset[str]) -> np.ndarray:
        """Restricted rows that share no department with `departments`."""
        granted = [self.by_department[d] for d in departments if d in self.by_department]
        if not granted:
            return self.restricted
        return np.setdiff1d(self.restricted, np.concatenate(granted))

    def rows_for(self, departments: Departments) -> np.ndarray | None:
        if departments is None or self.restricted.size == 0:
            return None
        key = frozenset(departments)
        if key not in self._rows:
            hidden = self.hidden_rows(key)
            self._rows[key] = None if hidden.size == 0 else np.setdiff1d(self.all_rows, hidden)
        return self._rows[key]

    def mask_for(self, departments: Departments) -> np.ndarray | None:
        if departments is None or self.restricted.size == 0:
            return None
        key = frozenset(departments)
        if key not in self._masks:
            hidden = self.hidden_rows(key)
            self._masks[key] = None if hidden.size == 0 else ~np.isin(self.keyword_rows, hidden)
        return self._masks[key]

    def selector_for(self, departments: Departments):
        """A FAISS IDSelector admitting the visible rows (None = all), built once per department set:
        a batch of the visible rows, or NOT a batch of the hidden ones when those are fewer."""
        rows = self.rows_for(departments)
        if rows is None:
            return None
        key = frozenset(departments or ())
        if key not in self._selectors:
            import faiss

            hidden = self.hidden_rows(key)
            if hidden.size < rows.size:
                inner = faiss.IDSelectorBatch(hidden)
                self._selectors[key] = (faiss.IDSelectorNot(inner), inner)  # inner kept alive with it
            else:
                self._selectors[key] = (faiss.IDSelectorBatch(rows),)
        return self._selectors[key][0]
