"""Close-match suggestions for names a user mistyped (column names, never data values)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean"]


def closest(name: str, choices: Iterable[object], *, cutoff: float = 0.6) -> str | None:
    """The choice closest to ``name``: a case-insensitive equal first, else difflib's best.

    Parameters
    ----------
    name : str
        The name that was not found.
    choices : iterable
        The names that exist (converted to text).
    cutoff : float, default=0.6
        Minimal :class:`difflib.SequenceMatcher` ratio of a suggestion.

    Returns
    -------
    str or None
        The suggestion, or None when nothing is close.
    """
    options = [str(c) for c in choices]
    folded = str(name).casefold().strip()
    for option in options:
        if option.casefold().strip() == folded:
            return option
    lowered = {option.casefold(): option for option in options}
    match = difflib.get_close_matches(folded, list(lowered), n=1, cutoff=cutoff)
    return lowered[match[0]] if match else None


def did_you_mean(name: str, choices: Iterable[object]) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    match = closest(name, choices)
    return f" (did you mean {match!r}?)" if match is not None and match != name else ""
