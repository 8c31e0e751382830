"""Resolving a simulation job from CLI-level choices: data, contract and partner split."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fedprofile.contract.parser import load_spec
from fedprofile.contract.spec import FeatureSpec
from fedprofile.contract.suggest import did_you_mean
from fedprofile.errors import ContractError, DataError
from fedprofile.io.sources import open_source
from fedprofile.presets.datasets import load_preset
from fedprofile.presets.identity import add_overlap, customer_keys
from fedprofile.presets.partition import Partition, PartitionRule, parse_rule, partition_frame
from fedprofile.privacy.pseudonym import normalize_email

__all__ = ["ensure_folder", "prepare_partitions", "rule_from_text"]

DEFAULT_PARTNERS = 5


def ensure_folder(path: Path, what: str) -> Path:
    """Create the folder ``path`` (and its parents) or refuse in one line.

    Raises
    ------
    ContractError
        If ``path`` is an existing file, lies below a file, or cannot be created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ContractError(f"The {what} {str(path)!r} is an existing file; give a folder.")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ContractError(f"The {what} {str(path)!r} cannot be created: {str(blocker)!r} is "
                            "a file, not a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ContractError(f"The {what} {str(path)!r} cannot be created "
                            f"({exc.strerror or type(exc).__name__}).") from None
    return path


def rule_from_text(text: str) -> PartitionRule:
    """A partition rule from ``COLUMN``, ``iid``, ``column:COLUMN`` or ``dirichlet:A:COLUMN``."""
    if text == "iid" or text.startswith(("column:", "dirichlet:")):
        return parse_rule(text)
    return PartitionRule("column", column=text)


def prepare_partitions(*, dataset: str | None, data: Path | str | None, spec: Path | None,
                       partition_by: str | None, partners: int | None, seed: int,
                       overlap: float = 0.0, data_query: str = ""
                       ) -> tuple[Path, list[Partition]]:
    """The contract path and one table per simulated partner.

    ``data`` is a file, a Parquet folder or a database URL (with ``data_query``, a table
    name or one ``SELECT``): one source holds every simulated partner's rows.

    Raises
    ------
    ContractError
        If the choices are inconsistent (both or neither of ``dataset`` and ``data``, a
        file without a spec or a partition rule, a rule naming an absent column).
    """
    if (dataset is None) == (data is None):
        raise ContractError("Give exactly one of --dataset (a shipped data set) or --data "
                            "(your own CSV/Parquet file, Parquet folder or database URL).")
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
        assert data is not None  # exactly one of dataset and data
        spec_path, frame = spec, open_source(data, data_query).read()
        rule_text, count = partition_by, partners or DEFAULT_PARTNERS
    contract = load_spec(spec_path)  # fail early on a bad contract
    rule = rule_from_text(rule_text)
    if rule.column is not None and rule.column not in frame.columns:
        raise ContractError(f"Partition column {rule.column!r} is not in the data"
                            f"{did_you_mean(rule.column, frame.columns)}; columns: "
                            f"{', '.join(map(str, frame.columns[:30]))}.")
    parts = partition_frame(frame, rule, count, seed=seed,
                            customers=customer_keys(frame, contract))
    if overlap > 0:
        parts = _with_overlap(parts, contract, overlap, seed)
    return Path(spec_path), parts


def _with_overlap(parts: list[Partition], spec: FeatureSpec, share: float, seed: int
                  ) -> list[Partition]:
    """Share ``share`` of each partner's customers with another partner (same identity)."""
    if spec.identity is None or not spec.identity.email:
        raise ContractError("--overlap needs a contract with an e-mail identity column, so "
                            "that a shared customer is the same person at both partners.")
    column = spec.identity.email
    key = "_customer_key"
    tagged = []
    for p in parts:
        canonical = {v: _canonical_email(v) for v in p.frame[column].dropna().unique()}
        tagged.append(replace(p, frame=p.frame.assign(**{key: p.frame[column].map(canonical)})))
    shared = add_overlap(tagged, share=share, id_column=key, seed=seed)
    return [replace(p, frame=p.frame.drop(columns=[key])) for p in shared]


def _canonical_email(value: str) -> str | None:
    try:
        return normalize_email(value)
    except DataError:
        return None
