"""Warm ClientApp processes: each task is a fork of a process that imported its libraries once.

Flower 1.41 runs every message to a partner in a new ClientApp process. Started cold, that
process spends about 1.2 s of CPU importing Flower's ClientApp runtime, fedprofile's partner
app, NumPy, pandas and SciPy, and 3 s more for torch and Opacus in a gradient round: most of
a deployment round on a small machine. The partner's launcher therefore keeps one *fork
server* (:mod:`multiprocessing`'s ``forkserver``): a fresh interpreter, started once, that
imports :data:`PRELOAD` and then forks a child per task. The child starts with those modules
already in memory and runs the task exactly as a cold process would (:func:`run_task`
re-checks the FAB against the allow-list for every task).

What the fork server holds: only the modules it imported. It is a new interpreter, not a
fork of the launcher, so it never sees the launcher's SuperExec secret or connections; a task's
token reaches its child through a private pipe, never the command line or environment; and
each child starts from the fork server's pristine state, so nothing of one task's data or
keys survives into the next.

What it changes about which code runs: nothing. fedprofile's ClientApp (``fedprofile.client.app``)
is the partner's *installed* release both ways, because the guarded process imports the
installed ``fedprofile`` package before any FAB is opened (a FAB's digest decides whether a run
may start; it cannot replace the partner's code). Modules an approved FAB ships under other
names still load from the FAB.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing import forkserver
from multiprocessing.process import BaseProcess
from typing import Any

from fedprofile.errors import ContractError

__all__ = ["PRELOAD", "WarmStarter"]

#: Imported once by the fork server: the guard, Flower's ClientApp runtime, the partner app and
#: the libraries it loads lazily (Parquet and dataset readers, torch and Opacus for DP-SGD).
PRELOAD: tuple[str, ...] = (
    "fedprofile.deploy.app_guard",
    "flwr.supernode.runtime.run_clientapp",
    "fedprofile.client.app",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "torch",
    "opacus",
)


def _ready() -> None:
    """A no-op task: proves the fork server is up and its preloads imported."""


class WarmStarter:
    """Starts tasks as forks of one fork server that imported ``preload`` once.

    Modules in ``preload`` that are not installed are skipped (torch and Opacus are an
    optional extra); one that is installed but fails to import stops the launcher at start,
    with its name, instead of failing every task later.
    """

    def __init__(self, preload: Sequence[str] = PRELOAD) -> None:
        self.preload = [name for name in preload if _installed(name)]
        self._context = multiprocessing.get_context("forkserver")

    def start_server(self) -> None:
        """Start the fork server and wait until its imports are done (seconds, once)."""
        self._context.set_forkserver_preload(self.preload)
        forkserver.ensure_running()
        probe = self._context.Process(target=_ready, name="fedprofile-warm-probe")
        try:
            probe.start()
            probe.join()
        except (OSError, EOFError):  # the fork server died while importing
            pass
        if probe.exitcode != 0:
            raise ContractError(
                "The partner's launcher could not start its warm ClientApp processes: one of "
                f"{', '.join(self.preload)} fails to import. Run `python -c \"import NAME\"` "
                "for each to see which.")

    def start(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> BaseProcess:
        """Run ``target(*args, **kwargs)`` in a new child of the fork server; returns at once."""
        child = self._context.Process(target=target, args=args, kwargs=kwargs,
                                      name="fedprofile-clientapp")
        child.start()
        return child

    @staticmethod
    def reap() -> int:
        """Collect finished children; the number still running."""
        return len(multiprocessing.active_children())


def _installed(name: str) -> bool:
    """Whether ``name``'s top-level package is installed (found without importing it)."""
    return importlib.util.find_spec(name.partition(".")[0]) is not None
