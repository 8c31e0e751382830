"""Tests of splitting transaction tables (a contract with [customers]) by customer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedprofile.errors import ContractError
from fedprofile.io.tables import write_table
from fedprofile.presets.identity import customer_keys, synthetic_email, synthetic_phone
from fedprofile.presets.partition import PartitionRule, partition_frame
from fedprofile.sim.jobs import prepare_partitions

SPEC = """
[federation]
name = "shop"

[customers]
id = "customer"

[customers.aggregates.spend]
function = "sum"
source = "amount"

[features.spend]
kind = "numeric"
bounds = [0, 1000]
"""

IDENTITY = """
[identity]
email = "email"
phone = "phone"
"""


def _lines(n_customers: int = 60, seed: int = 3) -> pd.DataFrame:
    """Transaction lines: customer c has 1 + (c % 7) * 5 lines, a shop mostly fixed by c."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_customers):
        n = 1 + (c % 7) * 5
        shops = np.where(rng.random(n) < 0.8, f"s{c % 4}", f"s{(c + 1) % 4}")
        rows += [{"customer": f"c{c:03d}", "amount": 10.0, "shop": s} for s in shops]
    order = rng.permutation(len(rows))
    return pd.DataFrame(rows).iloc[order].reset_index(drop=True)


def _spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _owner_of_customers(parts: list, key: str = "customer") -> dict[str, set[int]]:
    owners: dict[str, set[int]] = {}
    for i, p in enumerate(parts):
        for c in p.frame[key].unique():
            owners.setdefault(c, set()).add(i)
    return owners


@pytest.mark.parametrize("rule", ["iid", "shop", "dirichlet:1:shop"])
def test_prepare_partitions_keeps_each_customer_at_one_partner(tmp_path: Path, rule: str) -> None:
    """With --data and a [customers] contract, every customer's lines go to one partner."""
    frame = _lines()
    data = write_table(frame, tmp_path / "lines.csv")
    _, parts = prepare_partitions(dataset=None, data=data, spec=_spec(tmp_path),
                                  partition_by=rule, partners=3, seed=1)
    owners = _owner_of_customers(parts)
    assert all(len(o) == 1 for o in owners.values())
    assert len(owners) == 60
    assert sum(p.n_customers for p in parts) == 60
    assert sum(len(p.frame) for p in parts) == len(frame)
    for p in parts:
        assert p.n_customers == p.frame["customer"].nunique()
        assert f"{p.n_customers:,} customers" in p.label


def test_iid_balances_customers_not_lines() -> None:
    """IID over transactions gives partners whose customer counts differ by at most one."""
    frame = _lines(61)
    parts = partition_frame(frame, PartitionRule("iid"), 4, seed=0, customers=frame["customer"])
    counts = sorted(p.n_customers for p in parts)
    assert counts == [15, 15, 15, 16]


def test_column_rule_places_customer_by_majority_and_balances_customers() -> None:
    """A customer goes to the group of the value most of its rows hold; groups balance customers."""
    frame = pd.DataFrame({
        "customer": ["a"] * 5 + ["b"] * 3 + ["c"] + ["d"] + ["e"] * 2,
        "shop": ["x", "x", "x", "y", "y", "y", "y", "x", "z", "z", "x", "y"],
    })
    parts = partition_frame(frame, PartitionRule("column", column="shop"), 3,
                            customers=frame["customer"])
    where = {c: p.name for p in parts for c in p.frame["customer"]}
    assert where["a"] == "x"  # 3 of 5 rows in x
    assert where["b"] == "y"  # 2 of 3 rows in y
    assert where["e"] == "x"  # a tie: its first row's value
    assert {p.name: p.n_customers for p in parts} == {"x": 2, "y": 1, "z": 2}


def test_column_rule_groups_values_by_customer_counts() -> None:
    """One value with many lines but few customers is not balanced as if it were large."""
    frame = pd.DataFrame({
        "customer": ["big"] * 100 + [f"s{i}" for i in range(9)],
        "shop": ["w"] * 100 + ["u", "u", "u", "v", "v", "v", "t", "t", "t"],
    })
    parts = partition_frame(frame, PartitionRule("column", column="shop"), 2,
                            customers=frame["customer"])
    assert sorted(p.n_customers for p in parts) == [4, 6]


def test_rows_without_customer_are_kept_but_not_counted() -> None:
    """Rows without a customer key are spread over partners and count as no customer."""
    frame = _lines(20)
    keys = frame["customer"].where(frame.index % 5 != 0)
    parts = partition_frame(frame, PartitionRule("iid"), 3, seed=2, customers=keys)
    assert sum(len(p.frame) for p in parts) == len(frame)
    assert sum(p.n_customers for p in parts) == keys.nunique()


def test_customers_must_align_with_the_frame() -> None:
    frame = _lines(5)
    with pytest.raises(ContractError, match="one customer key per row"):
        partition_frame(frame, PartitionRule("iid"), 2, customers=frame["customer"].iloc[:3])


def test_too_many_partners_for_customers_is_refused() -> None:
    """More partners than customers leaves a partner without customers: refused."""
    frame = _lines(2)
    with pytest.raises(ContractError, match=r"no customer|no rows"):
        partition_frame(frame, PartitionRule("iid"), 3, customers=frame["customer"])


def test_without_customers_rows_are_the_units() -> None:
    """Without customer keys the split is by rows, as before, and counts are the rows."""
    frame = _lines(10)
    parts = partition_frame(frame, PartitionRule("iid"), 3, seed=0)
    assert [p.customers for p in parts] == [None] * 3
    assert [p.n_customers for p in parts] == [len(p.frame) for p in parts]


def test_identity_keys_follow_the_pseudonym_source(tmp_path: Path) -> None:
    """With [identity], rows of one person written differently share one key; the e-mail wins."""
    from fedprofile.contract.parser import load_spec

    spec = load_spec(_spec(tmp_path, SPEC.replace('id = "customer"', 'id = "pid"') + IDENTITY))
    frame = pd.DataFrame({
        "email": [synthetic_email(1, variant=v) for v in range(3)] + [None, "not-an-email"],
        "phone": [synthetic_phone(1, variant=v) for v in range(3)]
        + [synthetic_phone(2), synthetic_phone(2, variant=1)],
        "amount": [1.0] * 5,
    })
    keys = customer_keys(frame, spec)
    assert keys is not None
    assert keys.iloc[0] == keys.iloc[1] == keys.iloc[2]
    assert keys.iloc[0].startswith("email:")
    assert keys.iloc[3] == keys.iloc[4]
    assert keys.iloc[3].startswith("phone:")


def test_identity_split_keeps_people_whole(tmp_path: Path) -> None:
    """Lines of one person with varied e-mail spellings all go to one partner."""
    spec = _spec(tmp_path, SPEC.replace('id = "customer"', 'id = "pid"') + IDENTITY)
    frame = _lines(30)
    ids = frame["customer"].str[1:].astype(int)
    frame["email"] = [synthetic_email(c, variant=v) for v, c in enumerate(ids)]
    frame["phone"] = [synthetic_phone(c, variant=v) for v, c in enumerate(ids)]
    data = write_table(frame.drop(columns=["customer"]).assign(c=frame["customer"]),
                       tmp_path / "lines.parquet")
    _, parts = prepare_partitions(dataset=None, data=data, spec=spec, partition_by="iid",
                                  partners=3, seed=0)
    owners = _owner_of_customers(parts, key="c")
    assert all(len(o) == 1 for o in owners.values())
    assert sorted(p.n_customers for p in parts) == [10, 10, 10]


def test_missing_customer_id_column_suggests_the_close_name(tmp_path: Path) -> None:
    """A [customers] id column spelled differently from the data names the close match."""
    frame = _lines(5).rename(columns={"customer": "Customer"})
    data = write_table(frame, tmp_path / "lines.csv")
    with pytest.raises(ContractError, match=r"did you mean 'Customer'\?"):
        prepare_partitions(dataset=None, data=data, spec=_spec(tmp_path), partition_by="iid",
                           partners=2, seed=0)
