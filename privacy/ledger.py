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
from fedprofile.privacy.accounting import compose_mu, composed_epsilon
from fedprofile.privacy.events import PrivacyEvent, event_from_dict

__all__ = ["AcceptedPlan", "Ledger", "LedgerTransaction", "SpendSummary"]

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
CREATE TABLE IF NOT EXISTS plans (
    run_id TEXT NOT NULL, party TEXT NOT NULL, stages TEXT NOT NULL, events TEXT NOT NULL,
    accepted_at TEXT NOT NULL, PRIMARY KEY (run_id, party));
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


@dataclass(frozen=True)
class AcceptedPlan:
    """A run's announced plan as a partner accepted it: the stages and every release."""

    run_id: str
    stages: tuple[str, ...]
    events: tuple[PrivacyEvent, ...]


_EVENT_COLUMNS = ("mechanism", "sensitivity", "stage", "round", "component", "noise_multiplier")


class LedgerTransaction:
    """Reads and writes inside one exclusive SQLite write transaction (``BEGIN IMMEDIATE``).

    Everything read here cannot change before the transaction commits, so a check made on
    it and the record that follows are one atomic step for every thread and process.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def events(self, *, run_id: str | None, party: str | None) -> list[PrivacyEvent]:
        """Recorded events, oldest first, optionally for one run and/or party."""
        sql = (f"SELECT {', '.join(_EVENT_COLUMNS)} FROM releases "
               "WHERE (? IS NULL OR run_id = ?) AND (? IS NULL OR party = ?) ORDER BY seq")
        rows = self._db.execute(sql, (run_id, run_id, party, party)).fetchall()
        return [event_from_dict(dict(zip(_EVENT_COLUMNS, row, strict=True))) for row in rows]

    def record(self, *, run_id: str, party: str, events: Sequence[PrivacyEvent],
               delta: float) -> float:
        """Insert ``events``; return the run's epsilon after them."""
        done = self.events(run_id=run_id, party=party)
        rows = []
        for event in events:
            done.append(event)
            eps = composed_epsilon(done, delta)
            rows.append((run_id, party, event.stage, event.round, event.component,
                         event.mechanism, event.sensitivity, event.sigma,
                         event.noise_multiplier, delta, eps, _now()))
        self._db.executemany(
            "INSERT INTO releases (run_id, party, stage, round, component, mechanism, "
            "sensitivity, sigma, noise_multiplier, delta, epsilon_run, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return rows[-1][10] if rows else composed_epsilon(done, delta)

    def plan(self, *, run_id: str, party: str) -> AcceptedPlan | None:
        """The plan ``party`` accepted for ``run_id``, if any."""
        row = self._db.execute("SELECT stages, events FROM plans WHERE run_id = ? AND party = ?",
                               (run_id, party)).fetchone()
        if row is None:
            return None
        return AcceptedPlan(run_id=run_id, stages=tuple(json.loads(row[0])),
                            events=tuple(event_from_dict(d) for d in json.loads(row[1])))

    def save_plan(self, *, party: str, plan: AcceptedPlan) -> None:
        """Store an accepted plan (a run's plan is stored once and never replaced)."""
        self._db.execute("INSERT INTO plans VALUES (?, ?, ?, ?, ?)",
                         (plan.run_id, party, json.dumps(list(plan.stages)),
                          json.dumps([e.to_dict() for e in plan.events]), _now()))


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

    @contextmanager
    def exclusive(self) -> Iterator[LedgerTransaction]:
        """One atomic write transaction; an exception inside it rolls everything back.

        Checks and records made inside it cannot interleave with any other writer.
        """
        with self._transaction() as db:
            yield LedgerTransaction(db)

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
        with self.exclusive() as tx:
            return tx.record(run_id=run_id, party=party, events=events, delta=delta)

    def note(self, *, run_id: str, party: str, kind: str, message: str) -> None:
        """Record a refusal or another notable event (no data values in ``message``)."""
        with self._transaction() as db:
            db.execute("INSERT INTO notes (run_id, party, kind, message, created_at) "
                       "VALUES (?, ?, ?, ?, ?)", (run_id, party, kind, message, _now()))

    def events(self, *, run_id: str | None = None, party: str | None = None
               ) -> list[PrivacyEvent]:
        """Recorded events, oldest first, optionally for one run and/or party."""
        return LedgerTransaction(self._db).events(run_id=run_id, party=party)

    def spend(self, *, party: str, delta: float, run_id: str | None = None) -> SpendSummary:
        """Epsilon spent by ``party`` in ``run_id`` (or over its whole history) at ``delta``."""
        events = self.events(run_id=run_id, party=party)
        mu = compose_mu(e.mu for e in events)
        return SpendSummary(party=party, run_id=run_id, releases=len(events), mu=mu,
                            epsilon=composed_epsilon(events, delta), delta=delta)

    def plan(self, *, run_id: str, party: str) -> AcceptedPlan | None:
        """The plan ``party`` accepted for ``run_id``, if any."""
        return LedgerTransaction(self._db).plan(run_id=run_id, party=party)

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

    def has_note(self, *, kind: str, message: str) -> bool:
        """Whether a note of ``kind`` with exactly ``message`` was ever recorded."""
        return self._db.execute("SELECT 1 FROM notes WHERE kind = ? AND message = ? LIMIT 1",
                                (kind, message)).fetchone() is not None

    def release_rows(self, *, run_id: str | None = None) -> Iterable[dict[str, Any]]:
        """Raw release rows (for reports and the ``fedprofile ledger`` command)."""
        cur = self._db.execute("SELECT * FROM releases WHERE (? IS NULL OR run_id = ?) "
                               "ORDER BY seq", (run_id, run_id))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
