"""A partner's readiness checks: doomed runs are refused before any release, without data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fedprofile.client.checks import NotReadyError, check_ready, pooled_k_problem
from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.errors import ContractError
from fedprofile.server.federation import group_reasons

SPEC = """
[features.age]
kind = "numeric"
bounds = [18, 95]

[target.bought]
kind = "binary"
positive = "yes"

[target.flag]
kind = "binary"
positive = "TRUE"

[target.wrong]
kind = "binary"
positive = "1"

[target.always]
kind = "binary"
positive = "yes"
column = "all_yes"
"""


@pytest.fixture
def site(tmp_path: Path) -> PartnerSite:
    n = 40
    frame = pd.DataFrame({"age": range(20, 20 + n),
                          "bought": ["Yes" if i % 3 else "No" for i in range(n)],
                          "flag": [i % 2 == 0 for i in range(n)],
                          "wrong": ["Yes" if i % 3 else "SECRET-LABEL" for i in range(n)],
                          "all_yes": ["YES"] * n})
    data, spec = tmp_path / "data.csv", tmp_path / "spec.toml"
    frame.to_csv(data, index=False)
    spec.write_text(SPEC)
    return PartnerSite(NodeConfig(data_path=str(data), spec=str(spec), partner_name="acme",
                                  state_dir=str(tmp_path / "state")))


def test_labels_that_differ_in_case_or_type_are_accepted(site: PartnerSite) -> None:
    check_ready(site, k=None, target="bought", min_segment_size=50)  # "yes" vs Yes
    check_ready(site, k=None, target="flag", min_segment_size=50)    # "TRUE" vs booleans


def test_a_positive_label_matching_nothing_is_refused_without_values(site: PartnerSite
                                                                     ) -> None:
    with pytest.raises(NotReadyError, match="declares positive = '1'") as info:
        check_ready(site, k=None, target="wrong", min_segment_size=50)
    # the text that may leave the partner holds no label found and no count
    assert "SECRET-LABEL" not in str(info.value) and "40" not in str(info.value)
    # the local hint says what the column holds
    assert "SECRET-LABEL" in info.value.hint and "40 values do not match" in info.value.hint


def test_a_target_with_one_class_is_refused(site: PartnerSite) -> None:
    with pytest.raises(NotReadyError, match="customers of both classes"):
        check_ready(site, k=None, target="always", min_segment_size=50)


def test_an_undeclared_target_is_a_contract_error(site: PartnerSite) -> None:
    with pytest.raises(ContractError, match="'nosuch' is not declared"):
        check_ready(site, k=None, target="nosuch", min_segment_size=50)


def test_a_k_the_partner_cannot_fill_is_refused_without_its_count(site: PartnerSite) -> None:
    # Prepare: 40 customers; 6 segments of 50 need 300, 2 segments of 20 need 40
    # Execute
    with pytest.raises(NotReadyError, match="k=6 segments of at least 50 customers need "
                                            "more customers than this partner holds") as info:
        check_ready(site, k=6, target=None, min_segment_size=50)
    check_ready(site, k=2, target=None, min_segment_size=20)
    # Assert: the count stays in the local hint
    assert "40" not in str(info.value) and "300" not in str(info.value)
    assert "holds 40 customers; 300 are needed" in info.value.hint


def test_pooled_k_is_refused_when_segments_cannot_reach_the_minimum() -> None:
    assert pooled_k_problem(4, 50, 4_338, 6) is None
    assert "need 5,000 customers; the 3 partners hold 3,000" in pooled_k_problem(
        100, 50, 3_000, 3)


def test_identical_partner_errors_are_reported_once() -> None:
    same = "column 'Tenure' is missing (did you mean 'tenure'?)"
    assert group_reasons({f"p{i}": same for i in range(5)}, total=5) == f"all 5 partners: {same}"
    assert group_reasons({"a": "x", "b": "x", "c": "y"}, total=4) == "2 partners (a, b): x; c: y"
