"""The simulation's side of an overlap run: the true overlaps it knows, and the outputs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedprofile.contract.customers import ID_COLUMN
from fedprofile.errors import ContractError
from fedprofile.presets.partition import Partition
from fedprofile.server.report_overlap import write_overlap_outputs

__all__ = ["overlap_metrics", "read_overlap"]


def read_overlap(out_dir: Path) -> dict[str, Any]:
    """The overlap document the coordinator wrote."""
    path = out_dir / "model.json"
    if not path.is_file():
        raise ContractError(f"The simulation ended without an overlap in {out_dir}; see the "
                            "log above for the partners' replies.")
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def overlap_metrics(doc: dict[str, Any], tables: Sequence[Any] | None,
                    partitions: Sequence[Partition] | None, wall: float, out_dir: Path
                    ) -> dict[str, Any]:
    """Compare each released count with the true overlap (simulation only), write outputs.

    ``tables`` are the partners' customer tables (keyed pseudonyms), in ``partitions`` order.
    """
    truth: list[dict[str, Any]] = []
    if tables is not None and partitions is not None:
        ids = {p.name: set(t[ID_COLUMN].dropna().astype(str))
               for p, t in zip(partitions, tables, strict=True)}
        for cell in doc["pairs"]:
            a, b = cell["partners"]
            true = len(ids[a] & ids[b])
            noisy = cell.get("count")
            truth.append({"partners": [a, b], "true": true, "noisy": noisy,
                          "error": None if noisy is None else noisy - true,
                          "suppressed": bool(cell.get("suppressed")),
                          "refused": cell.get("refused", "")})
    metrics = {"task": "overlap", "wall_time_s": wall, "true_overlap": truth,
               "privacy": doc["privacy"], "n_partners": len(doc["partners"]),
               "evaluation": "simulation" if truth else "none"}
    write_overlap_outputs(doc, metrics, out_dir)
    return metrics
