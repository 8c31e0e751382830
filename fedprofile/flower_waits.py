"""Flower 1.41's fixed waits for message parts and in simulation, shortened where fedprofile runs.

Flower moves a message as a tree of parts (*objects*). A receiver that asks for a part not
stored yet waits a fixed 1 s before asking again (``initial_backoff`` of
``flwr.supercore.inflatable.inflatable_utils.pull_objects``), and that happens on nearly every
message of a deployment: the SuperNode announces a message to its ClientApp before the parts
have arrived from the SuperLink, and the SuperLink lists a partner's reply to the ServerApp
before its parts are uploaded. :func:`shorten_pull_backoff` starts that back-off at 20 ms
(still doubling up to Flower's 10 s cap and its retry limit). fedprofile applies it in the
ServerApp, the partner's SuperNode (:mod:`fedprofile.deploy.supernode`) and the partner's
ClientApp processes (:mod:`fedprofile.deploy.app_guard`).

Flower's simulation engine has a second fixed wait: it looks for new instructions to hand to
its virtual partners every 0.1 s, so every message exchange of a simulation waits 50 ms on
average for nothing. :func:`shorten_simulation_dispatch` makes that 20 ms (longer where a
pass over many partners takes long) in the process that runs a simulation
(:func:`fedprofile.sim.runner.simulate`).

Both change only how soon something is looked for again, never what is sent, and they are
applied only to the Flower version they were read from (:data:`PATCHED_VERSION`, the pin);
any other version keeps its own waits, with a warning.
"""

from __future__ import annotations

import inspect
import threading
import time
import warnings
from collections.abc import Mapping
from importlib.metadata import version
from queue import Queue
from typing import Any

__all__ = ["DISPATCH_SECONDS", "FLOWER_PULL_BACKOFF", "PATCHED_VERSION", "PULL_BACKOFF_SECONDS",
           "shorten_pull_backoff", "shorten_simulation_dispatch"]

PATCHED_VERSION = "1.41.0"
"""The Flower version whose waits were read and are shortened here."""
PULL_BACKOFF_SECONDS = 0.02
"""First wait before asking again for a message part that is not there yet (Flower: 1 s)."""
DISPATCH_SECONDS = 0.02
"""How often the simulation engine looks for new instructions (Flower: every 0.1 s)."""
_DISPATCH_PARAMETERS = ["state", "queue", "nodes_mapping", "f_stop"]
FLOWER_PULL_BACKOFF: dict[str, float] = {}
"""Flower's own ``initial_backoff`` of each pull function, kept when first shortened."""


def shorten_pull_backoff(initial: float = PULL_BACKOFF_SECONDS) -> bool:
    """Start Flower's back-off for not-yet-stored message parts at ``initial`` seconds.

    Sets the default ``initial_backoff`` of Flower's two object-pull functions for this
    process; False (and a warning) unless the installed Flower is :data:`PATCHED_VERSION`.
    """
    from flwr.supercore.inflatable import inflatable_utils as objects

    installed = version("flwr")
    functions = (objects.pull_objects, objects.pull_and_inflate_object_from_tree)
    defaults = [getattr(function, "__kwdefaults__", None) or {} for function in functions]
    if installed != PATCHED_VERSION or not all("initial_backoff" in d for d in defaults):
        warnings.warn(f"flwr {installed} is not {PATCHED_VERSION}: message parts keep "
                      "Flower's own 1 s back-off.", RuntimeWarning, stacklevel=2)
        return False
    for function, default in zip(functions, defaults, strict=True):
        FLOWER_PULL_BACKOFF.setdefault(function.__name__, default["initial_backoff"])
        default["initial_backoff"] = initial
    return True


def shorten_simulation_dispatch(interval: float = DISPATCH_SECONDS) -> bool:
    """Let Flower's simulation engine hand out new instructions every ``interval`` seconds.

    Replaces the engine's loop that moves instructions from its link state to its workers
    with one that does the same (each node's oldest undelivered instruction, one per node
    per pass) more often: every ``interval``, or twice as long as a pass took, whichever is
    longer (a pass scans the whole link state for every node: 17 ms, up to 80 ms, with 100
    partners), so the loop never takes more than a third of the time. False (and a warning)
    unless the installed Flower is :data:`PATCHED_VERSION` with the loop it was read from.
    """
    from flwr.server.superlink.fleet.vce import vce_api

    installed = version("flwr")
    current = getattr(vce_api, "add_messages_to_queue", None)
    flower_loop = getattr(current, "__wrapped__", current)  # Flower's, even if replaced
    if installed != PATCHED_VERSION or flower_loop is None \
            or list(inspect.signature(flower_loop).parameters) != _DISPATCH_PARAMETERS:
        warnings.warn(f"flwr {installed} is not {PATCHED_VERSION}: the simulation keeps "
                      "Flower's own 0.1 s dispatch wait.", RuntimeWarning, stacklevel=2)
        return False

    def dispatch(state: Any, queue: Queue[Any], nodes_mapping: Mapping[int, Any],
                 f_stop: threading.Event) -> None:
        while not f_stop.is_set():
            began = time.perf_counter()
            for node_id in list(nodes_mapping):
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
            f_stop.wait(max(interval, 2 * (time.perf_counter() - began)))

    dispatch.__wrapped__ = flower_loop  # type: ignore[attr-defined]
    vce_api.add_messages_to_queue = dispatch
    return True
