"""The SuperNode entry point with a short idle poll (``fedprofile.deploy.supernode``)."""

from __future__ import annotations

import inspect
import time
import warnings

import pytest

from fedprofile.deploy import supernode


@pytest.fixture
def loop(monkeypatch):
    """Flower's SuperNode loop module, restored after the test."""
    from flwr.supernode import start_client_internal as module

    monkeypatch.setattr(module, "time", module.time)
    return module


def test_the_pinned_flower_sleeps_three_seconds_when_idle(loop) -> None:
    # The patch targets exactly this line of the pinned version: if it moves, this fails
    source = inspect.getsource(loop.start_client_internal)
    assert "time.sleep(3)" in source
    assert supernode.version("flwr") == supernode.PATCHED_VERSION


def test_the_idle_sleep_is_capped_and_the_rest_of_time_is_unchanged(loop) -> None:
    # Execute
    applied = supernode.shorten_idle_poll(0.05)
    start = time.monotonic()
    loop.time.sleep(3)
    slept = time.monotonic() - start

    # Assert
    assert applied
    assert slept < 1.0
    assert loop.time.monotonic() >= start  # every other function is the real time module
    assert supernode.shorten_idle_poll(0.05)  # applying twice is harmless


def test_another_flower_version_runs_unchanged_with_a_warning(loop, monkeypatch) -> None:
    # Prepare
    monkeypatch.setattr(supernode, "version", lambda _: "9.9.9")

    # Execute
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        applied = supernode.shorten_idle_poll(0.05)

    # Assert
    assert not applied
    assert loop.time is time
    assert "keeps Flower's own 3 s idle poll" in str(caught[0].message)


@pytest.mark.parametrize("value", ["0", "0.01", "10"])
def test_a_poll_interval_out_of_range_is_refused_by_name(value, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        supernode.main(["--fleet-poll-seconds", value, "--insecure"])
    assert exited.value.code == 2
    assert "--fleet-poll-seconds must be between 0.05 and 3.0" in capsys.readouterr().err
