"""A durable privacy ledger in SQLite.

Every release is written (and committed with ``synchronous=FULL``) *before* the noised
aggregate is sent, so a process killed at any point never loses a recorded release: the worst
case is a release recorded but never sent, which over-counts spend (the safe side).
Partners keep one (authoritative for their own data); the coordinator keeps one per federation.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedprofile.errors import DataError
from privacy.accounting import compose_mu, gdp_epsilon
from privacy.events import PrivacyEvent, event_from_dict

__all__ = ["Ledger", "SpendSummary"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT NOT NULL, party TEXT NOT NULL, started_at TEXT NOT NULL,
    epsilon_target REAL, delta REAL NOT NULL, params TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, party));
CREATE TABLE IF NOT EXISTS releases (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, party TEXT NOT NULL,
    stage TEXT NOT NULL, round INTEGER NOT NULL, component TEXT NOT NULL,
    mechanism TEXT NOT NULL, sensitivity REAL NOT NULL, sigma REAL NOT NULL,
    noise_multiplier REAL NOT NULL, delta REAL NOT NULL, epsilon_run REAL NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, party TEXT NOT NULL,
    kind TEXT NOT NULL, message TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS releases_party ON releases (party, run_id);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class SpendSummary:
    """Privacy spent by one party in one run (or over all runs when ``run_id`` is None)."""

    party: str
    run_id: str | None
    releases: int
    mu: float
    epsilon: float
    delta: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {"party": self.party, "run_id": self.run_id, "releases": self.releases,
                "mu": None if math.isinf(self.mu) else self.mu,
                "epsilon": None if math.isinf(self.epsilon) else self.epsilon,
                "delta": self.delta}


class Ledger:
    """Privacy ledger persisted in SQLite.

    Parameters
    ----------
    path : str or Path
        Database file (created with its folder if absent), or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"Ledger {self.path!r} cannot be opened ({exc}); is it a "
                            "fedprofile ledger database?") from None

    def __repr__(self) -> str:
        return f"Ledger({self.path!r})"

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def start_run(self, *, run_id: str, party: str, epsilon_target: float, delta: float,
                  params: dict[str, Any] | None = None) -> None:
        """Register a run for ``party`` (idempotent)."""
        target = None if math.isinf(epsilon_target) else epsilon_target
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                       (run_id, party, _now(), target, delta, json.dumps(params or {})))

    def record(self, *, run_id: str, party: str, events: Sequence[PrivacyEvent],
               delta: float) -> float:
        """Durably record ``events`` in one transaction; return the run's epsilon after them."""
        with self._transaction() as db:
            mus = [e.mu for e in self._events(db, run_id=run_id, party=party)]
            rows = []
            for event in events:
                mus.append(event.mu)
                eps = gdp_epsilon(compose_mu(mus), delta)
                rows.append((run_id, party, event.stage, event.round, event.component,
                             event.mechanism, event.sensitivity, event.sigma,
                             event.noise_multiplier, delta, eps, _now()))
            db.executemany("INSERT INTO releases (run_id, party, stage, round, component, "
                           "mechanism, sensitivity, sigma, noise_multiplier, delta, epsilon_run,"
                           " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return rows[-1][10] if rows else self.spend(party=party, run_id=run_id, delta=delta).epsilon

    def note(self, *, run_id: str, party: str, kind: str, message: str) -> None:
        """Record a refusal or another notable event (no data values in ``message``)."""
        with self._transaction() as db:
            db.execute("INSERT INTO notes (run_id, party, kind, message, created_at) "
                       "VALUES (?, ?, ?, ?, ?)", (run_id, party, kind, message, _now()))

    @staticmethod
    def _events(db: sqlite3.Connection, *, run_id: str | None, party: str | None
                ) -> list[PrivacyEvent]:
        sql = ("SELECT mechanism, sensitivity, stage, round, component, noise_multiplier "
               "FROM releases WHERE (? IS NULL OR run_id = ?) AND (? IS NULL OR party = ?) "
               "ORDER BY seq")
        rows = db.execute(sql, (run_id, run_id, party, party)).fetchall()
        keys = ("mechanism", "sensitivity", "stage", "round", "component", "noise_multiplier")
        return [event_from_dict(dict(zip(keys, row, strict=True))) for row in rows]

    def events(self, *, run_id: str | None = None, party: str | None = None
               ) -> list[PrivacyEvent]:
        """Recorded events, oldest first, optionally for one run and/or party."""
        return self._events(self._db, run_id=run_id, party=party)

    def spend(self, *, party: str, delta: float, run_id: str | None = None) -> SpendSummary:
        """Epsilon spent by ``party`` in ``run_id`` (or over its whole history) at ``delta``."""
        events = self.events(run_id=run_id, party=party)
        mu = compose_mu(e.mu for e in events)
        return SpendSummary(party=party, run_id=run_id, releases=len(events), mu=mu,
                            epsilon=gdp_epsilon(mu, delta), delta=delta)

    def parties(self) -> list[str]:
        """Parties with recorded releases or runs."""
        rows = self._db.execute("SELECT party FROM runs UNION SELECT party FROM releases "
                                "ORDER BY party").fetchall()
        return [r[0] for r in rows]

    def runs(self, *, party: str | None = None) -> list[dict[str, Any]]:
        """Registered runs, oldest first."""
        rows = self._db.execute("SELECT run_id, party, started_at, epsilon_target, delta "
                                "FROM runs WHERE (? IS NULL OR party = ?) ORDER BY started_at",
                                (party, party)).fetchall()
        keys = ("run_id", "party", "started_at", "epsilon_target", "delta")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def notes(self, *, run_id: str | None = None) -> list[dict[str, Any]]:
        """Recorded notes (refusals), oldest first."""
        rows = self._db.execute("SELECT run_id, party, kind, message, created_at FROM notes "
                                "WHERE (? IS NULL OR run_id = ?) ORDER BY seq",
                                (run_id, run_id)).fetchall()
        keys = ("run_id", "party", "kind", "message", "created_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def release_rows(self, *, run_id: str | None = None) -> Iterable[dict[str, Any]]:
        """Raw release rows (for reports and the ``fedprofile ledger`` command)."""
        cur = self._db.execute("SELECT * FROM releases WHERE (? IS NULL OR run_id = ?) "
                               "ORDER BY seq", (run_id, run_id))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
