"""``flower-supernode`` with a short idle poll of the Fleet API.

Flower 1.41's SuperNode asks the SuperLink for a message and, when there is none, sleeps a
fixed 3 s before asking again (``flwr.supernode.start_client_internal``; no option sets it).
Between two rounds of a run every partner is idle, so each round waits on average 1.5 s and
up to 3 s before a partner even sees its instruction. This entry point runs the unchanged
``flower-supernode`` with that module's sleeps capped at ``--fleet-poll-seconds`` (default
0.2 s): a partner then asks the SuperLink a few times a second while idle.

It also starts Flower's back-off for message parts not yet stored at 20 ms instead of 1 s
(:mod:`fedprofile.flower_waits`), for the SuperNode's pulls from the SuperLink.

Both changes are applied only to the Flower version they were read from (:data:`PATCHED_VERSION`,
the version ``pyproject.toml`` pins); with any other version the SuperNode runs unchanged,
with a warning, so an upgrade can make it slower but never breaks it.

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

__all__ = ["DEFAULT_POLL_SECONDS", "PATCHED_VERSION", "main", "shorten_idle_poll"]

DEFAULT_POLL_SECONDS = 0.2
_POLL_RANGE = (0.05, 3.0)


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


def main(argv: list[str] | None = None) -> None:
    """Run ``flower-supernode`` with the short idle poll; arguments as ``flower-supernode``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--fleet-poll-seconds", type=float, default=DEFAULT_POLL_SECONDS)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    low, high = _POLL_RANGE
    if not low <= args.fleet_poll_seconds <= high:
        parser.exit(2, f"Error: --fleet-poll-seconds must be between {low} and {high} "
                       f"seconds, not {args.fleet_poll_seconds}.\n")
    shorten_idle_poll(args.fleet_poll_seconds)
    shorten_pull_backoff()
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
