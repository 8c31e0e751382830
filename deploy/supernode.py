"""``flower-supernode`` with a short idle poll of the Fleet API.

Flower 1.41's SuperNode asks the SuperLink for a message and, when there is none, sleeps a
fixed 3 s before asking again (``flwr.supernode.start_client_internal``; no option sets it).
Between two rounds of a run every partner is idle, so each round waits on average 1.5 s and
up to 3 s before a partner even sees its instruction. This entry point runs the unchanged
``flower-supernode`` with that module's sleeps capped at ``--fleet-poll-seconds`` (default
0.2 s): a partner then asks the SuperLink a few times a second while idle.

It also starts Flower's back-off for message parts not yet stored at 20 ms instead of 1 s
(:mod:`fedprofile.flower_waits`), for the SuperNode's pulls from the SuperLink, and declares a
node heartbeat of ``--heartbeat-seconds`` (default 10 s, the least the SuperLink accepts;
Flower's is 30 s): the SuperLink gives up on a partner that stopped answering after twice
that, so a run goes on without a crashed partner after about 20 s instead of a minute.

All three changes are applied only to the Flower version they were read from
(:data:`PATCHED_VERSION`, the version ``pyproject.toml`` pins); with any other version the
SuperNode runs unchanged, with a warning, so an upgrade can make it slower but never breaks it.

Usage (every other argument goes to ``flower-supernode`` as is)::

    python -m fedprofile.deploy.supernode --fleet-poll-seconds 0.2 --superlink HOST:9092 ...
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from importlib.metadata import version
from types import ModuleType
from typing import Any

from fedprofile.flower_waits import PATCHED_VERSION, shorten_pull_backoff

__all__ = ["DEFAULT_HEARTBEAT_SECONDS", "DEFAULT_POLL_SECONDS", "PATCHED_VERSION", "main",
           "shorten_heartbeat", "shorten_idle_poll"]

DEFAULT_POLL_SECONDS = 0.2
_POLL_RANGE = (0.05, 3.0)
DEFAULT_HEARTBEAT_SECONDS = 10.0
_HEARTBEAT_RANGE = (10.0, 1800.0)  # what Flower 1.41's SuperLink accepts


class _CappedSleep:
    """The ``time`` module, except that ``sleep`` waits at most ``cap`` seconds."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _loop_module() -> ModuleType:
    from flwr.supernode import start_client_internal as loop

    return loop


def shorten_idle_poll(cap: float) -> bool:
    """Cap the SuperNode loop's sleeps at ``cap`` seconds; False (and a warning) if not applied.

    Applied only when the installed Flower is :data:`PATCHED_VERSION` and its loop module
    uses the standard ``time`` module as read.
    """
    installed = version("flwr")
    loop = _loop_module()
    current = getattr(loop, "time", None)
    if installed != PATCHED_VERSION or not (current is time or isinstance(current, _CappedSleep)):
        warnings.warn(f"flwr {installed} is not {PATCHED_VERSION}: the SuperNode keeps "
                      "Flower's own 3 s idle poll.", RuntimeWarning, stacklevel=2)
        return False
    loop.time = _CappedSleep(cap)  # type: ignore[attr-defined]
    return True


def shorten_heartbeat(interval: float) -> bool:
    """Declare and send node heartbeats for an ``interval`` of seconds; False if not applied.

    Sets the interval this process's SuperNode announces to the SuperLink and paces its
    heartbeats by; applied only when the installed Flower is :data:`PATCHED_VERSION`.
    """
    from flwr.supercore import heartbeat
    from flwr.supernode import fleet_http_connection as connection

    installed = version("flwr")
    modules = (heartbeat, connection)
    if installed != PATCHED_VERSION or not all(
            hasattr(module, "HEARTBEAT_DEFAULT_INTERVAL") for module in modules):
        warnings.warn(f"flwr {installed} is not {PATCHED_VERSION}: the SuperNode keeps "
                      "Flower's own 30 s heartbeat.", RuntimeWarning, stacklevel=2)
        return False
    for module in modules:
        module.HEARTBEAT_DEFAULT_INTERVAL = interval  # type: ignore[attr-defined]
    return True


def _in_range(parser: argparse.ArgumentParser, flag: str, value: float,
              limits: tuple[float, float]) -> None:
    low, high = limits
    if not low <= value <= high:
        parser.exit(2, f"Error: {flag} must be between {low:g} and {high:g} seconds, "
                       f"not {value:g}.\n")


_HELP = f"""fedprofile options (before flower-supernode's own, below):
  --fleet-poll-seconds S  idle poll of the Fleet API, {_POLL_RANGE[0]}-{_POLL_RANGE[1]} s \
(default {DEFAULT_POLL_SECONDS})
  --heartbeat-seconds S   heartbeat declared to the SuperLink, {_HEARTBEAT_RANGE[0]:g}-\
{_HEARTBEAT_RANGE[1]:g} s (default {DEFAULT_HEARTBEAT_SECONDS:g})
"""


def main(argv: list[str] | None = None) -> None:
    """Run ``flower-supernode`` with the short idle poll; arguments as ``flower-supernode``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--fleet-poll-seconds", type=float, default=DEFAULT_POLL_SECONDS)
    parser.add_argument("--heartbeat-seconds", type=float, default=DEFAULT_HEARTBEAT_SECONDS)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(rest):
        sys.stdout.write(_HELP + "\n")
    _in_range(parser, "--fleet-poll-seconds", args.fleet_poll_seconds, _POLL_RANGE)
    _in_range(parser, "--heartbeat-seconds", args.heartbeat_seconds, _HEARTBEAT_RANGE)
    shorten_idle_poll(args.fleet_poll_seconds)
    shorten_pull_backoff()
    shorten_heartbeat(args.heartbeat_seconds)
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
