"""Flower's fixed waits, shortened: the SuperNode's idle poll (``fedprofile.deploy.supernode``),
the back-off for message parts not stored yet and the simulation engine's dispatch wait
(``fedprofile.flower_waits``)."""

from __future__ import annotations

import inspect
import time
import warnings

import pytest

from fedprofile import flower_waits
from fedprofile.deploy import supernode
from fedprofile.flower_waits import PULL_BACKOFF_SECONDS, shorten_pull_backoff


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


@pytest.mark.parametrize(("flag", "value", "limits"), [
    ("--fleet-poll-seconds", "0", "0.05 and 3"), ("--fleet-poll-seconds", "0.01", "0.05 and 3"),
    ("--fleet-poll-seconds", "10", "0.05 and 3"), ("--heartbeat-seconds", "5", "10 and 1800"),
    ("--heartbeat-seconds", "9.9", "10 and 1800"), ("--heartbeat-seconds", "3600", "10 and 1800"),
])
def test_a_wait_out_of_range_is_refused_by_name(flag, value, limits, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        supernode.main([flag, value, "--insecure"])
    assert exited.value.code == 2
    assert f"{flag} must be between {limits} seconds" in capsys.readouterr().err


@pytest.fixture
def heartbeat_modules(monkeypatch):
    """Flower's modules that read the node heartbeat interval, restored after the test."""
    from flwr.supercore import heartbeat
    from flwr.supernode import fleet_http_connection

    for module in (heartbeat, fleet_http_connection):
        monkeypatch.setattr(module, "HEARTBEAT_DEFAULT_INTERVAL", module.HEARTBEAT_DEFAULT_INTERVAL)
    return heartbeat, fleet_http_connection


def test_the_node_declares_and_paces_a_10_s_heartbeat(heartbeat_modules) -> None:
    assert all(m.HEARTBEAT_DEFAULT_INTERVAL == 30 for m in heartbeat_modules)  # Flower's own

    assert supernode.shorten_heartbeat(supernode.DEFAULT_HEARTBEAT_SECONDS)
    # the interval sent in ActivateNode / SendNodeHeartbeat, and the sender's pacing
    assert all(m.HEARTBEAT_DEFAULT_INTERVAL == 10 for m in heartbeat_modules)


def test_another_flower_version_keeps_its_heartbeat(heartbeat_modules, monkeypatch) -> None:
    monkeypatch.setattr(supernode, "version", lambda _: "9.9.9")

    with pytest.warns(RuntimeWarning, match="Flower's own 30 s heartbeat"):
        assert not supernode.shorten_heartbeat(10)
    assert all(m.HEARTBEAT_DEFAULT_INTERVAL == 30 for m in heartbeat_modules)


@pytest.fixture
def pull_defaults(monkeypatch):
    """Flower's own keyword defaults of its object-pull functions (even if a simulation in
    this process shortened them), restored after the test."""
    from flwr.supercore.inflatable import inflatable_utils as objects

    for function in (objects.pull_objects, objects.pull_and_inflate_object_from_tree):
        own = dict(function.__kwdefaults__)
        own["initial_backoff"] = flower_waits.FLOWER_PULL_BACKOFF.get(
            function.__name__, own["initial_backoff"])
        monkeypatch.setattr(function, "__kwdefaults__", own)
    return objects


def _pull_after_one_miss(objects) -> float:
    """Seconds Flower's pull_objects takes for a part that is missing on the first ask."""
    asked: list[str] = []

    def pull(object_id: str) -> bytes:
        asked.append(object_id)
        if len(asked) == 1:
            raise objects.ObjectUnavailableError(object_id)
        return b"part"

    start = time.monotonic()
    assert objects.pull_objects(["a"], pull) == {"a": b"part"}
    return time.monotonic() - start


def test_a_missing_message_part_is_asked_for_again_after_20_ms(pull_defaults) -> None:
    # Flower's own back-off: about 1 s (+-20 %) before the second ask
    assert _pull_after_one_miss(pull_defaults) >= 0.75

    assert shorten_pull_backoff()
    assert pull_defaults.pull_and_inflate_object_from_tree.__kwdefaults__[
        "initial_backoff"] == PULL_BACKOFF_SECONDS
    assert _pull_after_one_miss(pull_defaults) < 0.5


def test_another_flower_version_keeps_its_pull_back_off(pull_defaults, monkeypatch) -> None:
    monkeypatch.setattr(flower_waits, "version", lambda _: "9.9.9")

    with pytest.warns(RuntimeWarning, match="keep Flower's own 1 s back-off"):
        assert not shorten_pull_backoff()
    assert pull_defaults.pull_objects.__kwdefaults__["initial_backoff"] == 1


class _StopAfter:
    """A stand-in for the engine's stop event: records each wait, stops after ``passes``."""

    def __init__(self, passes: int) -> None:
        self.waits: list[float] = []
        self.passes = passes

    def is_set(self) -> bool:
        return len(self.waits) >= self.passes

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return self.is_set()


class _LinkState:
    """Undelivered instructions per node, handed out oldest first."""

    def __init__(self, pending: dict[int, list[str]]) -> None:
        self.pending = pending

    def get_message_ins(self, *, node_id: int, limit: int) -> list[str]:
        out, self.pending[node_id] = (self.pending[node_id][:limit],
                                      self.pending[node_id][limit:])
        return out


@pytest.fixture
def vce(monkeypatch):
    """Flower's simulation engine module, its dispatch loop restored after the test."""
    from flwr.server.superlink.fleet.vce import vce_api

    monkeypatch.setattr(vce_api, "add_messages_to_queue", vce_api.add_messages_to_queue)
    return vce_api


def test_the_pinned_simulation_engine_dispatches_every_tenth_of_a_second(vce) -> None:
    # The patch replaces this loop, which run_api looks up by name: if either moves, this fails
    flower_loop = getattr(vce.add_messages_to_queue, "__wrapped__", vce.add_messages_to_queue)
    assert "f_stop.wait(0.1)" in inspect.getsource(flower_loop)
    assert "add_messages_to_queue," in inspect.getsource(vce.run_api)


def test_the_simulation_hands_out_instructions_every_20_ms_one_per_node_per_pass(vce) -> None:
    import queue

    assert flower_waits.shorten_simulation_dispatch()
    state, out, stop = _LinkState({1: ["a1", "a2"], 2: ["b1"]}), queue.Queue(), _StopAfter(2)

    vce.add_messages_to_queue(state, out, {1: 0, 2: 1}, stop)

    assert stop.waits == [flower_waits.DISPATCH_SECONDS] * 2
    assert [out.get_nowait() for _ in range(3)] == ["a1", "b1", "a2"]
    assert out.empty()


def test_a_slow_pass_over_the_link_state_waits_twice_as_long_before_the_next(vce) -> None:
    import queue

    class SlowState(_LinkState):
        def get_message_ins(self, *, node_id: int, limit: int) -> list[str]:
            time.sleep(0.02)
            return super().get_message_ins(node_id=node_id, limit=limit)

    assert flower_waits.shorten_simulation_dispatch()
    stop = _StopAfter(1)

    vce.add_messages_to_queue(SlowState({1: [], 2: []}), queue.Queue(), {1: 0, 2: 1}, stop)

    assert stop.waits[0] >= 2 * 0.04


def test_another_flower_version_keeps_its_simulation_dispatch(vce, monkeypatch) -> None:
    original = vce.add_messages_to_queue
    monkeypatch.setattr(flower_waits, "version", lambda _: "9.9.9")

    with pytest.warns(RuntimeWarning, match="keeps Flower's own 0.1 s dispatch wait"):
        assert not flower_waits.shorten_simulation_dispatch()
    assert vce.add_messages_to_queue is original
