"""Error texts that leave the partner say what went wrong, not where: no local paths.

The full text stays in the partner's own log; the coordinator gets a copy with every local
path (the node's configured files and anything shaped like an absolute path) replaced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["redact_local_paths"]

_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:\\|~?/)[^\s'\"]+")
"""A POSIX (``/x``, ``~/x``) or Windows (``C:\\x``) absolute path, up to a quote or a space."""


def redact_local_paths(text: str, paths: Mapping[str, str] | Iterable[tuple[str, str]] = ()
                       ) -> str:
    """Replace each known local path by its label, then any absolute path by ``<local path>``.

    Parameters
    ----------
    text : str
        An error message.
    paths : mapping or iterable of (label, path)
        The node's configured paths, e.g. ``{"data-path": "/srv/crm.csv"}``; longer paths
        are replaced first so a folder never leaves a file name behind. Only paths with a
        folder part are replaced (a bare name such as ``out`` could be part of a word).

    Examples
    --------
    >>> redact_local_paths("Data file '/srv/crm.csv' does not exist.")
    "Data file '<local path>' does not exist."
    >>> redact_local_paths("data/x.csv: missing column", {"data-path": "data/x.csv"})
    '<data-path>: missing column'
    """
    items = paths.items() if isinstance(paths, Mapping) else paths
    named = [(k, v) for k, v in items if "/" in v or "\\" in v]
    for label, path in sorted(named, key=lambda kv: -len(kv[1])):
        text = text.replace(path, f"<{label}>")
    return _ABSOLUTE_PATH.sub("<local path>", text)
