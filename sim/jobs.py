"""Resolving a simulation job from CLI-level choices: data, contract and partner split."""

from __future__ import annotations

from pathlib import Path

from fedprofile.contract import load_spec
from fedprofile.errors import ContractError
from fedprofile.io import read_table
from sim.datasets import load_preset
from sim.partition import Partition, PartitionRule, parse_rule, partition_frame

__all__ = ["prepare_partitions", "rule_from_text"]

DEFAULT_PARTNERS = 5


def rule_from_text(text: str) -> PartitionRule:
    """A partition rule from ``COLUMN``, ``iid``, ``column:COLUMN`` or ``dirichlet:A:COLUMN``."""
    if text == "iid" or text.startswith(("column:", "dirichlet:")):
        return parse_rule(text)
    return PartitionRule("column", column=text)


def prepare_partitions(*, dataset: str | None, data: Path | None, spec: Path | None,
                       partition_by: str | None, partners: int | None, seed: int
                       ) -> tuple[Path, list[Partition]]:
    """The contract path and one table per simulated partner.

    Raises
    ------
    ContractError
        If the choices are inconsistent (both or neither of ``dataset`` and ``data``, a
        file without a spec or a partition rule, a rule naming an absent column).
    """
    if (dataset is None) == (data is None):
        raise ContractError("Give exactly one of --dataset (a shipped data set) or --data "
                            "(your own CSV/Parquet file).")
    if dataset is not None:
        preset = load_preset(dataset)
        spec_path = spec or preset.spec_path
        frame = preset.frame
        rule_text = partition_by or preset.partition_column
        count = partners or preset.default_partners
    else:
        if spec is None or partition_by is None:
            raise ContractError("With --data, also give --spec (the feature contract TOML) "
                                "and --partition-by (a column, 'iid' or "
                                "'dirichlet:ALPHA:COLUMN').")
        spec_path, frame = spec, read_table(data)  # type: ignore[arg-type]
        rule_text, count = partition_by, partners or DEFAULT_PARTNERS
    load_spec(spec_path)  # fail early on a bad contract
    rule = rule_from_text(rule_text)
    if rule.column is not None and rule.column not in frame.columns:
        raise ContractError(f"Partition column {rule.column!r} is not in the data; columns: "
                            f"{', '.join(map(str, frame.columns[:30]))}.")
    return Path(spec_path), partition_frame(frame, rule, count, seed=seed)
