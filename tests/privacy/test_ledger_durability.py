"""The ledger survives a process killed with SIGKILL in the middle of recording releases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedprofile.privacy.ledger import Ledger
from fedprofile.privacy.policy import PartnerGuard, PartnerPolicy

WRITER = textwrap.dedent("""
    import sys
    from fedprofile.privacy.events import GaussianEvent
    from fedprofile.privacy.ledger import Ledger

    ledger = Ledger(sys.argv[1])
    i = 0
    while True:
        event = GaussianEvent(noise_multiplier=50.0, sensitivity=1.0, stage="kmeans",
                              round=i, component="counts")
        ledger.record(run_id="run-1", party="acme", events=[event], delta=1e-6)
        print(i, flush=True)  # acknowledged only after the commit returned
        i += 1
""")


def test_recorded_releases_survive_kill_9(tmp_path: Path) -> None:
    # Prepare: a real process recording releases as fast as it can
    db = tmp_path / "ledger.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    acknowledged = -1
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 40:
                break
        # Execute: kill it mid-run, without any chance to clean up
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Assert: every acknowledged release is there, and the spend is seen by a later run
    with Ledger(db) as ledger:
        events = ledger.events(run_id="run-1", party="acme")
        assert len(events) >= acknowledged + 1
        assert [e.round for e in events] == list(range(len(events)))
        guard = PartnerGuard(PartnerPolicy(total_epsilon=100.0), ledger, "acme")
        assert guard.remaining() < 100.0
        spend = ledger.spend(party="acme", delta=1e-6)
        assert spend.releases == len(events)
        assert spend.epsilon > 0


@pytest.mark.parametrize("limit", [0.3, 0.6], ids=["tight", "loose"])
def test_successive_runs_stop_at_the_total_budget(tmp_path: Path, limit: float) -> None:
    from fedprofile.errors import PolicyRefusedError
    from fedprofile.privacy.events import GaussianEvent

    db = tmp_path / "ledger.sqlite"
    event = GaussianEvent(noise_multiplier=20.0, sensitivity=1.0, stage="kmeans", round=0,
                          component="counts")
    runs = 0
    with pytest.raises(PolicyRefusedError, match="total budget"):
        for run in range(1000):
            with Ledger(db) as ledger:  # a new process would reopen the file the same way
                guard = PartnerGuard(PartnerPolicy(total_epsilon=limit), ledger, "acme")
                guard.accept_plan(run_id=f"run-{run}", stages=("kmeans",), events=[event],
                                  delta=1e-6, min_segment_size=50)
                guard.authorize(run_id=f"run-{run}", stage="kmeans", events=[event])
            runs += 1
    with Ledger(db) as ledger:
        assert ledger.spend(party="acme", delta=1e-6).epsilon <= limit

    assert runs >= 1
