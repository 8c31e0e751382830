"""Tests of fedprofile.presets.partition: rule parsing and the column, IID and Dirichlet splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedprofile.errors import ContractError
from fedprofile.presets.partition import (
    MISSING_VALUE_NAME,
    Partition,
    PartitionRule,
    parse_rule,
    partition_frame,
)


def _frame() -> pd.DataFrame:
    """Toy table: 100 rows, job counts a=40, b=25, c=15, d=12, e=8, with a shuffled order."""
    jobs = ["a"] * 40 + ["b"] * 25 + ["c"] * 15 + ["d"] * 12 + ["e"] * 8
    order = np.random.default_rng(7).permutation(len(jobs))
    return pd.DataFrame(
        {"job": np.asarray(jobs)[order], "x": np.arange(len(jobs), dtype=float)},
        index=pd.RangeIndex(1000, 1100),
    )


def _assert_exact_cover(df: pd.DataFrame, parts: list[Partition]) -> None:
    """Check the partitions are disjoint and together hold every row of ``df`` once."""
    labels = np.concatenate([p.frame.index.to_numpy() for p in parts])
    assert len(labels) == len(df)
    assert len(np.unique(labels)) == len(df)
    assert set(labels) == set(df.index)
    for part in parts:
        pd.testing.assert_frame_equal(part.frame, df.loc[part.frame.index])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("column:job", PartitionRule("column", column="job")),
        ("iid", PartitionRule("iid")),
        ("dirichlet:0.3:job", PartitionRule("dirichlet", column="job", alpha=0.3)),
        (" dirichlet:2:channel_zip ", PartitionRule("dirichlet", column="channel_zip", alpha=2.0)),
    ],
    ids=["column", "iid", "dirichlet", "dirichlet-int-alpha"],
)
def test_parse_rule_accepts_documented_syntax(text: str, expected: PartitionRule) -> None:
    """Each documented rule string parses, and str() gives back a parseable rule."""
    rule = parse_rule(text)
    assert rule == expected
    assert parse_rule(str(rule)) == rule


@pytest.mark.parametrize(
    "text",
    [
        "",
        "column",
        "column:",
        "iid:job",
        "dirichlet:0.3",
        "dirichlet:abc:job",
        "dirichlet:-1:job",
        "dirichlet:0:job",
        "dirichlet:inf:job",
        "random:3",
    ],
)
def test_parse_rule_rejects_bad_text(text: str) -> None:
    """Malformed rules raise ContractError that quotes the text or names the parameter."""
    with pytest.raises(ContractError, match=r"rule|alpha"):
        parse_rule(text)


def test_partition_rule_rejects_inconsistent_fields() -> None:
    """PartitionRule refuses fields that do not fit its kind."""
    with pytest.raises(ContractError, match="takes no column"):
        PartitionRule("iid", column="job")
    with pytest.raises(ContractError, match="needs a non-empty column"):
        PartitionRule("column")
    with pytest.raises(ContractError, match="takes no alpha"):
        PartitionRule("column", column="job", alpha=1.0)
    with pytest.raises(ContractError, match="'kind'"):
        PartitionRule("random", column="job")  # type: ignore[arg-type]


def test_column_one_partner_per_value_when_counts_match() -> None:
    """With as many partners as values, each partner holds exactly one value."""
    df = _frame()
    parts = partition_frame(df, parse_rule("column:job"), 5)
    assert [p.name for p in parts] == ["a", "b", "c", "d", "e"]
    assert [len(p) for p in parts] == [40, 25, 15, 12, 8]
    _assert_exact_cover(df, parts)


def test_column_groups_values_greedily_largest_first() -> None:
    """Values go, largest first, into the currently smallest group (computed by hand)."""
    df = _frame()
    parts = partition_frame(df, parse_rule("column:job"), 3)
    # a=40 -> g0; b=25 -> g1; c=15 -> g2; d=12 -> g2 (27); e=8 -> g1 (33).
    assert [p.name for p in parts] == ["a", "b+e", "c+d"]
    assert [len(p) for p in parts] == [40, 33, 27]
    _assert_exact_cover(df, parts)
    assert set(parts[1].frame["job"]) == {"b", "e"}


def test_column_grouping_balances_many_small_values() -> None:
    """Many equal-sized values spread evenly over the partners."""
    df = pd.DataFrame({"k": np.repeat([f"v{i:02d}" for i in range(12)], 10)})
    parts = partition_frame(df, parse_rule("column:k"), 4)
    assert [len(p) for p in parts] == [30, 30, 30, 30]
    _assert_exact_cover(df, parts)


def test_column_missing_values_form_their_own_group() -> None:
    """Missing values of the partition column become the group value '(missing)'."""
    df = pd.DataFrame({"k": ["x", None, "y", None, "x", np.nan]})
    parts = partition_frame(df, parse_rule("column:k"), 3)
    assert [p.name for p in parts] == [MISSING_VALUE_NAME, "x", "y"]
    assert [len(p) for p in parts] == [3, 2, 1]
    _assert_exact_cover(df, parts)


def test_column_fewer_values_than_partners_is_refused() -> None:
    """Asking for more partners than distinct values explains the limit and the fix."""
    with pytest.raises(ContractError, match=r"n_partners.*column 'job' \(5\).*Got 6.*iid"):
        partition_frame(_frame(), parse_rule("column:job"), 6)


def test_column_rule_ignores_seed() -> None:
    """The column split is deterministic whatever the seed."""
    df = _frame()
    first = partition_frame(df, parse_rule("column:job"), 3, seed=1)
    second = partition_frame(df, parse_rule("column:job"), 3, seed=2)
    for a, b in zip(first, second, strict=True):
        assert a.name == b.name
        pd.testing.assert_frame_equal(a.frame, b.frame)


def test_iid_equal_sizes_and_exact_cover() -> None:
    """IID parts differ in size by at most one row and cover the frame exactly."""
    df = _frame()
    parts = partition_frame(df, parse_rule("iid"), 7, seed=3)
    assert [p.name for p in parts] == [f"iid-{i}" for i in range(7)]
    assert sorted(len(p) for p in parts) == [14] * 5 + [15] * 2
    _assert_exact_cover(df, parts)


def test_iid_is_deterministic_for_a_seed_and_varies_with_it() -> None:
    """The same seed gives the same split; another seed gives another split."""
    df = _frame()
    a = partition_frame(df, parse_rule("iid"), 4, seed=11)
    b = partition_frame(df, parse_rule("iid"), 4, seed=11)
    c = partition_frame(df, parse_rule("iid"), 4, seed=12)
    assert [p.frame.index.tolist() for p in a] == [p.frame.index.tolist() for p in b]
    assert [p.frame.index.tolist() for p in a] != [p.frame.index.tolist() for p in c]


def test_iid_more_partners_than_rows_names_the_empty_partner() -> None:
    """An empty IID partner is refused, naming it."""
    with pytest.raises(ContractError, match=r"Partner 'iid-3' received no rows"):
        partition_frame(_frame().head(3), parse_rule("iid"), 4)


def test_dirichlet_exact_cover_and_determinism() -> None:
    """Dirichlet parts cover the frame exactly and repeat for the same seed."""
    df = _frame()
    rule = parse_rule("dirichlet:1.0:job")
    a = partition_frame(df, rule, 3, seed=5)
    b = partition_frame(df, rule, 3, seed=5)
    assert [p.name for p in a] == ["dirichlet-0", "dirichlet-1", "dirichlet-2"]
    _assert_exact_cover(df, a)
    assert [p.frame.index.tolist() for p in a] == [p.frame.index.tolist() for p in b]


def test_dirichlet_large_alpha_is_near_iid_small_alpha_is_skewed() -> None:
    """Each label's top partner share is about 1/4 for large alpha and near 1 for small."""
    df = pd.DataFrame({"label": np.repeat([f"l{i}" for i in range(10)], 1000)})

    def top_share(alpha: float) -> float:
        parts = partition_frame(df, parse_rule(f"dirichlet:{alpha}:label"), 4, seed=0)
        owner = pd.concat([pd.Series(i, index=p.frame.index) for i, p in enumerate(parts)])
        table = pd.crosstab(df["label"], owner.reindex(df.index), normalize="index")
        return float(table.max(axis=1).mean())

    assert top_share(1000.0) < 0.30
    assert top_share(0.1) > 0.7


def test_dirichlet_empty_partner_is_refused() -> None:
    """A tiny alpha with few rows leaves a partner empty, which is refused by name."""
    df = pd.DataFrame({"label": ["p"] * 5})
    with pytest.raises(ContractError, match=r"Partner 'dirichlet-\d+' received no rows"):
        partition_frame(df, parse_rule("dirichlet:0.01:label"), 8, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_partners": 0}, r"'n_partners'.*\[1, inf\). Got 0"),
        ({"n_partners": 2.5}, r"'n_partners'.*Got 2.5"),
        ({"n_partners": True}, r"'n_partners'.*Got True"),
        ({"n_partners": 2, "seed": -1}, r"'seed'.*Got -1"),
        ({"n_partners": 2, "rule": PartitionRule("column", column="nope")}, r"'nope'.*job, x"),
        ({"n_partners": 2, "rule": "iid"}, r"'rule'.*PartitionRule"),
        ({"n_partners": 2, "df": [1, 2]}, r"'df'.*DataFrame"),
    ],
    ids=[
        "zero-partners",
        "float-partners",
        "bool-partners",
        "negative-seed",
        "unknown-column",
        "rule-as-text",
        "not-a-frame",
    ],
)
def test_partition_frame_validates_arguments(kwargs: dict[str, object], match: str) -> None:
    """Invalid arguments raise ContractError naming the parameter and the value received."""
    args: dict[str, object] = {"df": _frame(), "rule": parse_rule("iid"), "seed": 0, **kwargs}
    with pytest.raises(ContractError, match=match):
        partition_frame(**args)  # type: ignore[arg-type]
