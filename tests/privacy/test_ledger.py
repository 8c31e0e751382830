"""Tests for the SQLite privacy ledger: round trip, durability, spend, notes, refusals."""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from fedprofile.errors import DataError
from fedprofile.privacy.accounting import gdp_epsilon
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent, PrivacyEvent
from fedprofile.privacy.ledger import Ledger

DELTA = 1e-6
EPS_MU_ONE = 4.886554117462211  # epsilon of 1-GDP at delta = 1e-6 (closed form, brentq)


def _g(z: float, component: str = "sums", rnd: int = 1, stage: str = "kmeans",
       sensitivity: float = 2.0) -> GaussianEvent:
    return GaussianEvent(noise_multiplier=z, sensitivity=sensitivity, stage=stage, round=rnd,
                         component=component)


def _round_events(rnd: int, z: float = 2.0) -> list[PrivacyEvent]:
    return [_g(z, "sums", rnd), _g(z, "counts", rnd, sensitivity=1.0)]


def test_recorded_events_read_back_equal_and_in_order(tmp_path: Path) -> None:
    # Prepare
    events: list[PrivacyEvent] = [
        _g(3.0, "sums", 0, "kmeans-init", 2.5),
        _g(4.5, "counts", 0, "kmeans-init", 1.0),
        NonPrivateEvent(sensitivity=2.5, stage="kmeans", round=1, component="sums"),
        _g(0.75, "counts", 1, "kmeans", 1.0),
    ]

    # Execute
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.record(run_id="r1", party="acme", events=events, delta=DELTA)
        back = ledger.events(run_id="r1", party="acme")

    # Assert
    assert back == events
    assert [type(e) for e in back] == [GaussianEvent, GaussianEvent, NonPrivateEvent,
                                       GaussianEvent]


def test_events_are_filtered_by_run_and_party() -> None:
    # Prepare
    ledger = Ledger(":memory:")
    a1, a2, b1 = _round_events(1), _round_events(2), _round_events(1, z=5.0)
    ledger.record(run_id="r1", party="a", events=a1, delta=DELTA)
    ledger.record(run_id="r2", party="a", events=a2, delta=DELTA)
    ledger.record(run_id="r1", party="b", events=b1, delta=DELTA)

    # Execute / Assert
    assert ledger.events(run_id="r1", party="a") == a1
    assert ledger.events(party="a") == a1 + a2
    assert ledger.events(run_id="r1") == a1 + b1
    assert ledger.events() == a1 + a2 + b1
    assert ledger.parties() == ["a", "b"]
    ledger.close()


def test_ledger_survives_close_and_reopen(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "nested" / "folder" / "ledger.sqlite"
    events = _round_events(1) + _round_events(2)
    first = Ledger(path)
    first.start_run(run_id="r1", party="acme", epsilon_target=1.0, delta=DELTA,
                    params={"k": 4})
    first.record(run_id="r1", party="acme", events=events, delta=DELTA)
    first.note(run_id="r1", party="acme", kind="refusal", message="stage not allowed")
    first.close()

    # Execute
    second = Ledger(path)

    # Assert
    assert path.is_file()
    assert second.events(run_id="r1", party="acme") == events
    assert [(r["run_id"], r["party"], r["epsilon_target"], r["delta"])
            for r in second.runs()] == [("r1", "acme", 1.0, DELTA)]
    assert [n["message"] for n in second.notes()] == ["stage not allowed"]
    second.close()


def test_two_connections_see_each_others_committed_releases(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "ledger.sqlite"
    writer, reader = Ledger(path), Ledger(path)

    # Execute
    writer.record(run_id="r1", party="acme", events=_round_events(1), delta=DELTA)

    # Assert: committed before record() returns, so visible to another connection at once
    assert reader.events(party="acme") == _round_events(1)
    writer.close()
    reader.close()


def test_start_run_is_idempotent_and_stores_an_infinite_target_as_null() -> None:
    # Prepare
    ledger = Ledger(":memory:")

    # Execute
    ledger.start_run(run_id="r1", party="acme", epsilon_target=math.inf, delta=DELTA)
    ledger.start_run(run_id="r1", party="acme", epsilon_target=2.0, delta=DELTA)

    # Assert
    runs = ledger.runs(party="acme")
    assert len(runs) == 1
    assert runs[0]["epsilon_target"] is None
    assert ledger.runs(party="other") == []
    ledger.close()


def test_spend_per_run_and_lifetime_compose_exactly() -> None:
    # Prepare: each run is two releases at z = 2 -> mu**2 = 0.5 per run; two runs -> mu = 1
    ledger = Ledger(":memory:")
    ledger.record(run_id="r1", party="acme", events=_round_events(1), delta=DELTA)
    ledger.record(run_id="r2", party="acme", events=_round_events(1), delta=DELTA)
    ledger.record(run_id="r1", party="other", events=_round_events(1, z=1.0), delta=DELTA)

    # Execute
    per_run = ledger.spend(party="acme", run_id="r1", delta=DELTA)
    lifetime = ledger.spend(party="acme", delta=DELTA)

    # Assert
    assert per_run.releases == 2
    assert per_run.mu == pytest.approx(math.sqrt(0.5), rel=1e-15)
    assert per_run.epsilon == pytest.approx(gdp_epsilon(math.sqrt(0.5), DELTA), rel=1e-15)
    assert lifetime.releases == 4
    assert lifetime.run_id is None
    assert lifetime.mu == pytest.approx(1.0, rel=1e-15)
    assert lifetime.epsilon == pytest.approx(EPS_MU_ONE, rel=1e-11)
    assert lifetime.to_dict() == {"party": "acme", "run_id": None, "releases": 4,
                                  "mu": lifetime.mu, "epsilon": lifetime.epsilon,
                                  "delta": DELTA}
    ledger.close()


def test_spend_of_an_unknown_party_is_zero() -> None:
    # Prepare
    ledger = Ledger(":memory:")

    # Execute
    spend = ledger.spend(party="nobody", delta=DELTA)

    # Assert
    assert (spend.releases, spend.mu, spend.epsilon) == (0, 0.0, 0.0)
    ledger.close()


def test_record_returns_the_runs_cumulative_epsilon_and_stores_it_per_release() -> None:
    # Prepare
    ledger = Ledger(":memory:")

    # Execute
    first = ledger.record(run_id="r1", party="acme", events=[_g(2.0)], delta=DELTA)
    second = ledger.record(run_id="r1", party="acme", events=[_g(2.0), _g(2.0), _g(2.0)],
                           delta=DELTA)
    nothing = ledger.record(run_id="r1", party="acme", events=[], delta=DELTA)

    # Assert
    assert first == pytest.approx(gdp_epsilon(0.5, DELTA))
    assert second == pytest.approx(EPS_MU_ONE, rel=1e-11)
    assert nothing == second
    rows = list(ledger.release_rows(run_id="r1"))
    assert [r["epsilon_run"] for r in rows] == pytest.approx(
        [gdp_epsilon(0.5 * math.sqrt(i), DELTA) for i in (1, 2, 3, 4)])
    assert {r["sigma"] for r in rows} == {4.0}
    assert {r["mechanism"] for r in rows} == {"gaussian"}
    ledger.close()


def test_non_private_release_makes_the_spend_infinite() -> None:
    # Prepare
    ledger = Ledger(":memory:")

    # Execute
    eps = ledger.record(run_id="r1", party="acme", delta=DELTA, events=[
        NonPrivateEvent(sensitivity=1.0, stage="kmeans", round=1, component="counts")])

    # Assert
    spend = ledger.spend(party="acme", delta=DELTA)
    assert eps == math.inf
    assert spend.epsilon == math.inf
    assert spend.to_dict()["epsilon"] is None
    assert spend.to_dict()["mu"] is None
    ledger.close()


def test_notes_are_kept_in_order_and_filtered_by_run() -> None:
    # Prepare
    ledger = Ledger(":memory:")

    # Execute
    ledger.note(run_id="r1", party="acme", kind="refusal", message="first")
    ledger.note(run_id="r2", party="acme", kind="info", message="second")
    ledger.note(run_id="r1", party="acme", kind="refusal", message="third")

    # Assert
    assert [n["message"] for n in ledger.notes()] == ["first", "second", "third"]
    assert [(n["kind"], n["message"]) for n in ledger.notes(run_id="r1")] == [
        ("refusal", "first"), ("refusal", "third")]
    assert all(n["created_at"] for n in ledger.notes())
    ledger.close()


def test_an_exception_inside_an_exclusive_transaction_records_nothing() -> None:
    # Prepare
    ledger = Ledger(":memory:")
    ledger.record(run_id="r0", party="acme", events=[_g(20.0)], delta=DELTA)
    before = list(ledger.release_rows())

    # Execute
    with pytest.raises(RuntimeError), ledger.exclusive() as tx:
        tx.record(run_id="r1", party="acme", events=_round_events(1), delta=DELTA)
        assert len(tx.events(run_id="r1", party="acme")) == len(_round_events(1))
        raise RuntimeError("refused after the check")

    # Assert
    assert list(ledger.release_rows()) == before
    assert ledger.events(run_id="r1") == []
    ledger.close()


def test_an_exclusive_transaction_records_its_releases() -> None:
    # Prepare
    ledger = Ledger(":memory:")

    # Execute
    with ledger.exclusive() as tx:
        tx.record(run_id="r1", party="acme", events=_round_events(1), delta=DELTA)

    # Assert
    assert ledger.events(run_id="r1", party="acme") == _round_events(1)
    ledger.close()


@pytest.mark.parametrize("content", [b"this is not a database" * 100, b"\x00\xff" * 2048],
                         ids=["text", "binary"])
def test_a_corrupt_ledger_file_raises_data_error_naming_it(tmp_path: Path,
                                                           content: bytes) -> None:
    # Prepare
    path = tmp_path / "partner-ledger.sqlite"
    path.write_bytes(content)

    # Execute / Assert
    with pytest.raises(DataError, match=r"partner-ledger\.sqlite"):
        Ledger(path)


def test_a_foreign_sqlite_database_gains_the_ledger_tables_without_losing_its_own(
        tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "shared.sqlite"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE other (x INTEGER)")
        db.execute("INSERT INTO other VALUES (7)")

    # Execute
    ledger = Ledger(path)
    ledger.record(run_id="r1", party="acme", events=[_g(2.0)], delta=DELTA)
    ledger.close()

    # Assert
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT x FROM other").fetchall() == [(7,)]
        assert db.execute("SELECT COUNT(*) FROM releases").fetchone() == (1,)
