"""Each simulated partner's local data-quality counts, summarised for the CLI and report.

A partner writes ``data_quality.json`` (exact counts of its own data) next to its ledger;
in a deployment it stays there. A simulation holds every partner's files, so the harness
reads them to show the user how the data met the contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "WARN_SHARE", "category_suggestions", "quality_summary", "quality_warnings"]

WARN_SHARE = 0.05
"""A count above this share of a partner's rows is warned about."""

KINDS = {"missing": "missing", "unparseable": "unparseable", "clipped": "clipped",
         "other_category": "(other)"}
"""Per-feature counts of ``data_quality.json`` and how they are named to users."""


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int | float) and v}


def quality_summary(files: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """Per partner counts read from each partner's ``data_quality.json``.

    Rows, customers and dropped customers; per-feature missing, unparseable, clipped,
    ``(other)`` and imputed counts with their totals. Partners without a readable file
    are left out.
    """
    out: dict[str, dict[str, Any]] = {}
    for partner, path in files.items():
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        entry: dict[str, Any] = {"rows": int(doc.get("rows", 0)),
                                 "customers": int(doc.get("customers", 0)),
                                 "dropped": int(doc.get("dropped", 0))}
        for key in (*KINDS, "imputed"):
            by_feature = _counts(doc.get(key))
            entry[key] = sum(by_feature.values())
            entry[f"{key}_by_feature"] = by_feature
        out[partner] = entry
    return out


def quality_warnings(summary: Mapping[str, Mapping[str, Any]], *,
                     share: float = WARN_SHARE) -> list[str]:
    """One warning per problem above ``share`` of a partner's rows, naming the partners."""
    found: dict[str, list[str]] = {}
    for partner, q in summary.items():
        rows = max(int(q.get("rows", 0)), 1)
        if q.get("dropped", 0) / rows > share:
            found.setdefault("customers dropped (a value the contract drops was missing)",
                             []).append(f"{partner} {100 * q['dropped'] / rows:.1f} %")
        for key, label in KINDS.items():
            for feature, n in (q.get(f"{key}_by_feature") or {}).items():
                if n / rows > share:
                    found.setdefault(f"{feature!r} {label}", []).append(
                        f"{partner} {100 * n / rows:.1f} %")
    return [f"{what} above {100 * share:g} % of rows at {len(where)} partner"
            f"{'' if len(where) == 1 else 's'}: {', '.join(where)}."
            for what, where in found.items()]


def category_suggestions(files: Mapping[str, Path]) -> list[str]:
    """Undeclared category values close to a declared one, with the partners holding them.

    These are the partners' own values (``other_suggestions`` of ``data_quality.json``):
    for the console of the user who holds every simulated partner's data, never for a
    model, metrics file or report.
    """
    found: dict[tuple[str, str, str], list[str]] = {}
    for partner, path in files.items():
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        suggestions = doc.get("other_suggestions")
        for feature, pairs in (suggestions if isinstance(suggestions, Mapping) else {}).items():
            for value, match in (pairs if isinstance(pairs, Mapping) else {}).items():
                found.setdefault((str(feature), str(value), str(match)), []).append(partner)
    return [f"feature {feature!r}: {value!r} is not a declared category, counted as (other); "
            f"did you mean {match!r}? (at {', '.join(where)})"
            for (feature, value, match), where in sorted(found.items())]
