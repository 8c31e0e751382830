"""Tests of fedprofile.presets.datasets: the presets load the real data with its published facts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest

from fedprofile.errors import ContractError, DataError
from fedprofile.presets.datasets import (
    PRESETS,
    RETAIL_CUTOFF,
    Preset,
    load_preset,
    preset_partition_file,
    retail_customer_features,
    retail_future_spend,
    uk_shard,
)
from fedprofile.resources import CONTRACTS, packaged_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_NAMES = ["bank", "hillstrom", "retail"]


@pytest.fixture(scope="module")
def presets() -> dict[str, Preset]:
    """Every preset, loaded once for the module."""
    return {name: load_preset(name) for name in PRESETS}


def test_registry_lists_the_presets() -> None:
    """The registry holds the documented presets and cannot be changed."""
    assert set(PRESETS) == {"bank", "hillstrom", "retail", "retail-holdout", "retail-transactions"}
    with pytest.raises(TypeError):
        PRESETS["x"] = PRESETS["bank"]  # type: ignore[index]


def test_unknown_preset_lists_valid_names() -> None:
    """An unknown name raises ContractError that lists every valid name."""
    with pytest.raises(ContractError, match=r"'bank', 'hillstrom', 'retail'.*Got 'banks'"):
        load_preset("banks")


def test_missing_data_file_raises_data_error(tmp_path: Path) -> None:
    """A data folder without the file raises DataError naming the file."""
    with pytest.raises(DataError, match=r"bank-full\.csv\.gz"):
        load_preset("bank", data_dir=tmp_path)


def test_every_preset_has_unique_customer_ids(presets: dict[str, Preset]) -> None:
    """Each preset has one row per customer and a default split that covers it exactly."""
    for preset in presets.values():
        if preset.name == "retail-transactions":  # raw lines: identities, no customer id
            continue
        ids = preset.frame["customer_id"]
        assert ids.is_unique
        assert ids.str.startswith(preset.name.split("-")[0] + "-").all()
        parts = preset.partitions()
        assert len(parts) == preset.default_partners
        assert sum(len(p) for p in parts) == len(preset.frame)


def test_bank_published_facts(presets: dict[str, Preset]) -> None:
    """bank: 45,211 customers, 5,289 with y == 'yes', ids from the row number."""
    frame = presets["bank"].frame
    assert len(frame) == 45_211
    assert int((frame["y"] == "yes").sum()) == 5_289
    assert frame["customer_id"].iloc[123] == "bank-000123"
    assert presets["bank"].partition_column == "job"
    assert presets["bank"].default_partners == 5


def test_bank_default_partners_are_balanced_job_groups(presets: dict[str, Preset]) -> None:
    """The 5 job groups are within a factor 1.25 of each other and keep whole jobs."""
    parts = presets["bank"].partitions()
    sizes = [len(p) for p in parts]
    assert max(sizes) / min(sizes) < 1.25
    assert parts[0].name == "blue-collar"
    jobs = [set(p.frame["job"]) for p in parts]
    assert sum(len(j) for j in jobs) == 12


def test_hillstrom_published_facts(presets: dict[str, Preset]) -> None:
    """hillstrom: 64,000 customers, published means, 9 channel x zip partners."""
    preset = presets["hillstrom"]
    frame = preset.frame
    assert len(frame) == 64_000
    assert frame["spend"].mean() == pytest.approx(1.05091, abs=1e-5)
    assert frame["visit"].mean() == pytest.approx(0.14678, abs=1e-5)
    sizes = {p.name: len(p) for p in preset.partitions()}
    assert len(sizes) == 9
    assert sizes["Multichannel-Rural"] == 1_130


def test_retail_holdout_customers_and_regions(presets: dict[str, Preset]) -> None:
    """retail: a plausible customer count, 6 regions with 3 UK shards, a non-negative target."""
    frame = presets["retail-holdout"].frame
    assert 3_000 <= len(frame) <= 4_400
    regions = set(frame["partner_region"])
    assert regions == {"UK-1", "UK-2", "UK-3", "Germany", "France", "Rest of world"}
    uk = frame.loc[frame["country"] == "United Kingdom", "partner_region"]
    assert set(uk) == {"UK-1", "UK-2", "UK-3"}
    assert (frame["future_spend"] >= 0).all()
    assert 0.3 < frame["future_purchase"].mean() < 0.9
    assert (frame["recency_days"] >= 1).all()
    assert (frame["tenure_days"] >= frame["recency_days"]).all()
    assert (frame["tenure_days"] <= (RETAIL_CUTOFF - pd.Timestamp("2010-12-01")).days).all()
    assert frame["cancel_share"].between(0, 1).all()


def test_retail_full_has_more_customers_than_holdout(presets: dict[str, Preset]) -> None:
    """retail covers the whole year: at most 4,372 customers, more than the hold-out."""
    assert len(presets["retail-holdout"].frame) < len(presets["retail"].frame) <= 4_372


def test_uk_shard_is_stable() -> None:
    """The UK shard is SHA-256 based, hence the same on every run and platform."""
    assert [uk_shard(c) for c in (12346, 17850, 18287, 12747, 13047)] == [1, 1, 0, 1, 1]
    assert {uk_shard(c) for c in range(12_000, 12_100)} == {0, 1, 2}


def test_retail_features_by_hand() -> None:
    """RFM features and the hold-out target on a hand-made transaction table."""
    day = pd.Timestamp
    tx = pd.DataFrame(
        {
            "customer": [1, 1, 1, 1, 2, 2],
            "invoice": ["A", "A", "B", "C9", "D", "E"],
            "product": ["p", "q", "p", "p", "p", "p"],
            "date": [
                day("2011-01-01 10:00"),
                day("2011-01-01 10:00"),
                day("2011-03-01 12:00"),
                day("2011-03-02 09:00"),
                day("2011-10-01"),
                day("2011-02-01"),
            ],
            "amount": [10.0, 5.0, 20.0, -10.0, 100.0, 7.0],
            "country": ["France"] * 4 + ["Germany"] * 2,
            "cancelled": [False, False, False, True, False, False],
            "clean": [True, True, True, False, True, True],
        }
    )
    features = retail_customer_features(tx, snapshot=day("2011-04-01"))
    one = features.loc[1]
    assert (one["frequency"], one["monetary"], one["mean_basket"]) == (2, 35.0, 17.5)
    assert (one["distinct_products"], one["recency_days"], one["tenure_days"]) == (2, 31, 90)
    assert one["cancel_share"] == pytest.approx(0.25)
    assert features.loc[2, "monetary"] == 7.0
    future = retail_future_spend(tx, start=day("2011-04-01"), end=day("2011-12-10"))
    assert future.to_dict() == {2: 100.0}


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_spec_parses_and_matches_frame(name: str, presets: dict[str, Preset]) -> None:
    """Each spec file parses with tomllib and names columns the preset frame has."""
    preset = presets[name]
    assert preset.spec_path == packaged_dir(CONTRACTS) / f"{name}.toml"
    with preset.spec_path.open("rb") as handle:
        spec = tomllib.load(handle)
    assert spec["federation"]["name"] == name
    for feature, table in spec["features"].items():
        assert table["kind"] in {"numeric", "categorical"}
        assert table.get("column", feature) in preset.frame.columns
        if table["kind"] == "numeric":
            low, high = table["bounds"]
            assert low < high
    # retail's targets live in its hold-out variant (the full year has no future window)
    target_frame = presets["retail-holdout"].frame if name == "retail" else preset.frame
    for target, table in spec.get("target", {}).items():
        assert table.get("column", target) in target_frame.columns
    assert "duration" not in spec["features"]
    assert "segment" not in spec["features"]


def test_retail_full_shares_the_retail_spec(presets: dict[str, Preset]) -> None:
    """retail has every retail feature column, though no target."""
    preset = presets["retail"]
    with preset.spec_path.open("rb") as handle:
        spec = tomllib.load(handle)
    assert all(f in preset.frame.columns for f in spec["features"])
    assert "future_spend" not in preset.frame.columns


def test_retail_transactions_partners_hold_whole_customers(presets: dict[str, Preset]) -> None:
    """The raw-lines preset splits people, not lines: 4,372 customers, each at one partner."""
    parts = presets["retail-transactions"].partitions()
    assert sum(p.n_customers for p in parts) == 4_372
    assert sum(len(p.frame) for p in parts) == len(presets["retail-transactions"].frame)
    for p in parts:
        assert p.n_customers < len(p.frame)
        assert f"{p.n_customers:,} customers" in p.label
    emails = [set(p.frame["email"].str.strip().str.lower()) for p in parts]
    for i, first in enumerate(emails):
        for second in emails[i + 1:]:
            assert not first & second


@pytest.mark.parametrize(("dataset", "pid", "match"), [
    ("../../../secret/payroll", 0, "'dataset'"),
    ("/etc/passwd", 0, "'dataset'"),
    ("bank", "0/../../x", "'partition-id'"),
    ("bank", -1, "'partition-id'"),
], ids=["relative-path", "absolute-path", "id-with-path", "negative-id"])
def test_partition_file_names_come_only_from_presets_and_integers(
        dataset: str, pid: object, match: str, tmp_path: Path) -> None:
    # Prepare: a file where an unchecked name would lead
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "payroll-5-0.parquet").write_bytes(b"not for the federation")
    # Execute / Assert: refused before any file is looked at
    with pytest.raises(ContractError, match=match):
        preset_partition_file(dataset, pid, 5, tmp_path / "a" / "b" / "c")  # type: ignore[arg-type]


def test_partition_file_of_a_preset_is_written_once_in_the_folder(tmp_path: Path) -> None:
    path = preset_partition_file("bank", 1, 5, tmp_path)
    assert path.parent == tmp_path and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no staging file left
    assert preset_partition_file("bank", 1, 5, tmp_path) == path
