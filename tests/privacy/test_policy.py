"""Tests for partner policies: parsing the policy file and enforcing it against the ledger."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedprofile.errors import ContractError
from fedprofile.privacy.events import PrivacyEvent
from fedprofile.privacy.policy import ALL_STAGES, SIMULATION_POLICY, PartnerPolicy, load_policy
from fedprofile.server.kmeans import plan_kmeans

DESIGN_POLICY = """\
# A partner's privacy policy (DESIGN example)
max_epsilon_per_run = 1.0
total_epsilon = 4.0
delta = 1e-6
min_segment_size = 50
allowed_stages = ["profile", "kmeans"]
"""


def _write(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _design_policy() -> PartnerPolicy:
    return PartnerPolicy(max_epsilon_per_run=1.0, total_epsilon=4.0, delta=1e-6,
                         min_segment_size=50, allowed_stages=("profile", "kmeans"),
                         allow_non_private=False)


def _plan_events(epsilon: float) -> tuple[PrivacyEvent, ...]:
    return plan_kmeans(epsilon=epsilon, delta=1e-6, lloyd_rounds=3, norm_bound=2.0).events()


# --- load_policy -----------------------------------------------------------------------------


def test_design_example_policy_is_parsed(tmp_path: Path) -> None:
    # Prepare
    path = _write(tmp_path, DESIGN_POLICY)

    # Execute
    policy = load_policy(path)

    # Assert
    assert policy == _design_policy()
    assert policy.source == str(path)
    assert policy.to_dict() == {"max_epsilon_per_run": 1.0, "total_epsilon": 4.0,
                                "delta": 1e-6, "min_segment_size": 50,
                                "allowed_stages": ["profile", "kmeans"],
                                "allow_non_private": False, "max_candidate_centres": 4096,
                                "min_secure_aggregation_partners": 3,
                                "min_secure_aggregation_dropouts": 0,
                                "min_overlap_size": 20, "min_query_set_size": 100,
                                "max_overlap_queries_per_day": 3, "min_seed_size": 100}


def test_min_secure_aggregation_dropouts_is_read(tmp_path: Path) -> None:
    # Execute
    policy = load_policy(_write(tmp_path, "min_secure_aggregation_dropouts = 2\n"))

    # Assert: the key is read, and absent it defaults to 0 (any declared t)
    assert policy.min_secure_aggregation_dropouts == 2
    assert PartnerPolicy().min_secure_aggregation_dropouts == 0


def test_empty_policy_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    # Execute
    policy = load_policy(_write(tmp_path, ""))

    # Assert
    assert policy == PartnerPolicy()
    assert policy.max_epsilon_per_run == 1.0
    assert policy.total_epsilon == 10.0
    assert policy.delta == 1e-6
    assert policy.allowed_stages == ALL_STAGES
    assert policy.allow_non_private is False


def test_default_policy_without_a_file_is_limited_and_private() -> None:
    # Execute
    policy = PartnerPolicy()

    # Assert
    assert policy.allow_non_private is False
    assert (policy.max_epsilon_per_run, policy.total_epsilon) == (1.0, 10.0)


def test_only_the_simulation_policy_is_unlimited() -> None:
    assert SIMULATION_POLICY.allow_non_private is True
    assert math.isinf(SIMULATION_POLICY.max_epsilon_per_run)
    assert math.isinf(SIMULATION_POLICY.total_epsilon)
    assert SIMULATION_POLICY.to_dict()["total_epsilon"] is None


@pytest.mark.parametrize(("line", "key"), [
    ("max_epsilon = 1.0", "max_epsilon"),
    ("budget = 2", "budget"),
    ("[limits]\nx = 1", "limits"),
], ids=["misspelt-key", "unknown-key", "unknown-table"])
def test_unknown_key_raises_contract_error_naming_it(tmp_path: Path, line: str,
                                                     key: str) -> None:
    # Prepare
    path = _write(tmp_path, line + "\n")

    # Execute / Assert
    with pytest.raises(ContractError, match=f"unknown key.*'{key}'"):
        load_policy(path)


@pytest.mark.parametrize(("line", "key"), [
    ("max_epsilon_per_run = 0", "max_epsilon_per_run"),
    ("max_epsilon_per_run = -1.0", "max_epsilon_per_run"),
    ("max_epsilon_per_run = nan", "max_epsilon_per_run"),
    ("max_epsilon_per_run = \"1.0\"", "max_epsilon_per_run"),
    ("total_epsilon = true", "total_epsilon"),
    ("total_epsilon = 0.0", "total_epsilon"),
    ("delta = 0", "delta"),
    ("delta = 1.5", "delta"),
    ("delta = inf", "delta"),
    ("min_segment_size = -1", "min_segment_size"),
    ("min_segment_size = 2.5", "min_segment_size"),
    ("min_segment_size = true", "min_segment_size"),
    ("allowed_stages = [\"kmeans\", \"export\"]", "allowed_stages"),
    ("allowed_stages = \"kmeans\"", "allowed_stages"),
    ("allow_non_private = \"yes\"", "allow_non_private"),
    ("min_secure_aggregation_dropouts = -1", "min_secure_aggregation_dropouts"),
    ("min_secure_aggregation_dropouts = 1.5", "min_secure_aggregation_dropouts"),
], ids=["max-zero", "max-negative", "max-nan", "max-string", "total-bool", "total-zero",
        "delta-zero", "delta-above-one", "delta-inf", "min-size-negative", "min-size-float",
        "min-size-bool", "stage-unknown", "stages-not-a-list", "non-private-string",
        "secagg-dropouts-negative", "secagg-dropouts-float"])
def test_bad_value_raises_contract_error_naming_the_key(tmp_path: Path, line: str,
                                                        key: str) -> None:
    # Prepare
    path = _write(tmp_path, line + "\n")

    # Execute / Assert
    with pytest.raises(ContractError, match=f"'{key}'") as info:
        load_policy(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("value", ['[["kmeans"]]', "[{stage = \"kmeans\"}]"],
                         ids=["nested-list", "inline-table"])
def test_unhashable_allowed_stage_raises_contract_error(tmp_path: Path, value: str) -> None:
    # Prepare
    path = _write(tmp_path, f"allowed_stages = {value}\n")

    # Execute / Assert
    with pytest.raises(ContractError, match="'allowed_stages'"):
        load_policy(path)


def test_missing_policy_file_raises_contract_error_naming_it(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "absent.toml"

    # Execute / Assert
    with pytest.raises(ContractError, match=r"absent\.toml.*does not exist"):
        load_policy(path)


def test_non_toml_policy_file_raises_contract_error_naming_it(tmp_path: Path) -> None:
    # Prepare
    path = _write(tmp_path, "max_epsilon_per_run: 1.0\n", name="policy.yaml")

    # Execute / Assert
    with pytest.raises(ContractError, match=r"policy\.yaml.*not valid TOML"):
        load_policy(path)
