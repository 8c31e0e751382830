"""Flower 1.41's fixed wait for message parts, shortened in the processes fedprofile runs.

Flower moves a message as a tree of parts (*objects*). A receiver that asks for a part not
stored yet waits a fixed 1 s before asking again (``initial_backoff`` of
``flwr.supercore.inflatable.inflatable_utils.pull_objects``), and that happens on nearly every
message of a deployment: the SuperNode announces a message to its ClientApp before the parts
have arrived from the SuperLink, and the SuperLink lists a partner's reply to the ServerApp
before its parts are uploaded. :func:`shorten_pull_backoff` starts that back-off at 20 ms
(still doubling up to Flower's 10 s cap and its retry limit). fedprofile applies it in the
ServerApp, the partner's SuperNode (:mod:`fedprofile.deploy.supernode`) and the partner's
ClientApp processes (:mod:`fedprofile.deploy.app_guard`).

It changes only how soon a missing part is asked for again, never what is sent, and it is
applied only to the Flower version it was read from (:data:`PATCHED_VERSION`, the pin); any
other version keeps its own waits, with a warning.
"""

from __future__ import annotations

import warnings
from importlib.metadata import version

__all__ = ["PATCHED_VERSION", "PULL_BACKOFF_SECONDS", "shorten_pull_backoff"]

PATCHED_VERSION = "1.41.0"
"""The Flower version whose waits were read and are shortened here."""
PULL_BACKOFF_SECONDS = 0.02
"""First wait before asking again for a message part that is not there yet (Flower: 1 s)."""


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
    for default in defaults:
        default["initial_backoff"] = initial
    return True
