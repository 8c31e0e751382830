"""Close-match suggestions for names a user mistyped (column names, never data values)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = ["closest", "did_you_mean", "guess_separator", "missing_columns_hint",
           "one_column_problem"]


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


_SEPARATOR_NAMES = {";": "semicolon", ":": "colon", "|": "pipe", "\t": "tab", ",": "comma",
                    " ": "space"}


def guess_separator(header: str) -> str | None:
    """The separator a one-column header most likely uses: the most frequent candidate."""
    counts = {sep: header.count(sep) for sep in _SEPARATOR_NAMES}
    sep = max(counts, key=lambda s: counts[s])
    return sep if counts[sep] else None


def one_column_problem(columns: Sequence[object], *, needed: int) -> str | None:
    """Why a table read as one column cannot serve a contract needing ``needed`` columns.

    The header (a column name: schema, never data values) says which separator the file
    probably uses. None when the table has more than one column or one is enough.
    """
    if len(columns) != 1 or needed < 2:
        return None
    sep = guess_separator(str(columns[0]))
    guess = (f"; it probably uses {_SEPARATOR_NAMES[sep]}s ({sep!r}) as separator"
             if sep is not None else "")
    need = f"the contract needs {needed}" if needed > 2 else "more are needed"
    return (f"the file reads as one column, but {need}{guess}. Save it with one of the "
            "separators , ; tab or | and quote only fields.")


def missing_columns_hint(absent: Sequence[str], columns: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` for close column names (schema, never data values)."""
    if len(absent) == 1:
        return did_you_mean(absent[0], columns)
    options = list(columns)
    found = [(name, closest(name, options)) for name in absent]
    pieces = [f"{name!r}: did you mean {match!r}?" for name, match in found if match]
    return f" ({'; '.join(pieces)})" if pieces else ""
