"""Tests for the typed run and node configuration parsed from Flower's flat dicts."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fedprofile.config import NodeConfig, RunConfig
from fedprofile.errors import ContractError

ROOT = Path(__file__).resolve().parents[2]


def test_empty_mapping_gives_the_documented_defaults() -> None:
    # Execute
    cfg = RunConfig.from_mapping({})

    # Assert
    expected = {"spec": "bank", "k": 6, "epsilon": 1.0, "delta": 1e-6, "rounds": 0,
                "init": "overcluster", "candidates": 0, "min_segment_size": 50,
                "min_partners": 2, "seed": 0, "out_dir": "runs/latest", "timeout": 600.0,
                "noise": "partner", "noise_auto": True}
    assert {name: getattr(cfg, name) for name in expected} == expected
    assert cfg == RunConfig(noise_auto=True)


@pytest.mark.parametrize(("mapping", "noise"), [
    ({}, "partner"),  # waits for 2 partners: too few to hide one partner's sums
    ({"expected_partners": 3}, "secagg"),
    ({"min_partners": 5}, "secagg"),
    ({"expected_partners": 3, "epsilon": math.inf}, "partner"),  # no noise to share
    ({"expected_partners": 3, "task": "ridge", "target": "y"}, "secagg"),
    ({"expected_partners": 3, "task": "pipeline", "target": "y"}, "secagg"),
    ({"expected_partners": 3, "task": "overlap"}, "partner"),
    ({"expected_partners": 3, "noise": "partner"}, "partner"),
    ({"noise": "secagg"}, "secagg"),
], ids=["two-partners", "expected-3", "min-5", "non-private", "ridge", "pipeline", "overlap",
        "explicit-partner", "explicit-secagg"])
def test_auto_noise_chooses_secure_aggregation_from_three_planned_partners(
        mapping: dict[str, Any], noise: str) -> None:
    # Execute
    cfg = RunConfig.from_mapping(mapping)
    # Assert: resolved from public values; only "auto" may fall back to partner noise
    assert cfg.noise == noise
    assert cfg.noise_auto == ("noise" not in mapping)


@pytest.mark.parametrize("key", ["noise-auto", "k-auto"])
def test_a_derived_field_given_as_a_key_is_refused_by_name(key: str) -> None:
    # Execute / Assert: set through 'noise' / 'k' only, never silently ignored
    with pytest.raises(ContractError, match=key.replace("-", "_")):
        RunConfig.from_mapping({key: True})


@pytest.mark.parametrize(("mapping", "lloyd_rounds", "candidates"), [
    ({}, 12, 72),  # epsilon 1 over the fewest partners, 2: a sum's budget 0.167
    ({"epsilon": math.inf}, 20, 1000),
    ({"epsilon": math.inf, "rounds": 4, "candidates": 80}, 4, 80),
    ({"rounds": 7}, 7, 72),
    # partner noise: every partner's draw is in the sum, so more partners plan fewer rounds
    ({"noise": "partner", "epsilon": 0.5, "expected_partners": 6}, 5, 72),
    ({"noise": "partner", "epsilon": 1, "expected_partners": 6}, 8, 72),
    ({"noise": "partner", "epsilon": 2, "expected_partners": 6}, 12, 72),
    # secagg: one noise draw per sum, so the same epsilon affords more rounds
    ({"noise": "secagg", "expected_partners": 6}, 12, 72),
    ({"noise": "secagg", "epsilon": 0.25}, 5, 72),
    ({"noise": "secagg", "epsilon": 0.5, "secagg_dropouts": 1}, 8, 72),
    ({"noise": "secagg", "epsilon": 0.5, "secagg_dropouts": 1, "expected_partners": 10},
     12, 72),
], ids=["private-auto", "non-private-auto", "non-private-explicit", "private-explicit",
        "partner-0.5-of-6", "partner-1-of-6", "partner-2-of-6", "secagg-1", "secagg-0.25",
        "secagg-0.5-dropout-fewest-partners", "secagg-0.5-dropout-10-partners"])
def test_zero_rounds_and_candidates_resolve_from_the_budget(
    mapping: dict[str, Any], lloyd_rounds: int, candidates: int
) -> None:
    # Execute
    cfg = RunConfig.from_mapping(mapping)

    # Assert: 6 segments, 10 features -> max(12 * 6, 5 * 10) = 72 candidates when private
    assert (cfg.lloyd_rounds, cfg.n_candidates(10)) == (lloyd_rounds, candidates)


def test_dash_keys_are_read_as_underscore_fields() -> None:
    # Execute
    cfg = RunConfig.from_mapping({"min-segment-size": 10, "min-partners": 3,
                                  "out-dir": "runs/x", "k": 4, "candidates": 40,
                                  "init": "random", "seed": 9, "timeout": 30})

    # Assert
    assert (cfg.min_segment_size, cfg.min_partners, cfg.out_dir) == (10, 3, "runs/x")
    assert (cfg.k, cfg.candidates, cfg.init, cfg.seed) == (4, 40, "random", 9)
    assert cfg.timeout == 30.0
    assert isinstance(cfg.timeout, float)


def test_underscore_keys_are_accepted_too() -> None:
    # Execute
    cfg = RunConfig.from_mapping({"min_segment_size": 7})

    # Assert
    assert cfg.min_segment_size == 7


def test_project_run_config_in_pyproject_parses() -> None:
    # Prepare
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    flat = data["tool"]["flwr"]["app"]["config"]

    # Execute
    cfg = RunConfig.from_mapping(flat)

    # Assert
    assert cfg.spec == "bank"
    assert cfg.epsilon == flat["epsilon"]


@pytest.mark.parametrize("value", ["inf", "Inf", " infinity ", math.inf],
                         ids=["str-inf", "str-Inf", "str-infinity-padded", "float-inf"])
def test_infinite_epsilon_is_an_explicit_non_private_run(value: Any) -> None:
    # Execute
    cfg = RunConfig.from_mapping({"epsilon": value})

    # Assert
    assert cfg.epsilon == math.inf


@pytest.mark.parametrize(("key", "value", "field", "expected"), [
    ("epsilon", 2, "epsilon", 2.0),
    ("delta", 0.1, "delta", 0.1),
    ("k", 1, "k", 1),
    ("k", 100, "k", 100),
    ("rounds", 50, "rounds", 50),
    ("candidates", 6, "candidates", 6),
    ("min-segment-size", 0, "min_segment_size", 0),
], ids=["int-epsilon", "delta-upper-edge", "k-lower-edge", "k-upper-edge", "rounds-upper-edge",
        "candidates-equal-k", "min-size-zero"])
def test_boundary_values_are_accepted(key: str, value: Any, field: str, expected: Any) -> None:
    # Execute
    cfg = RunConfig.from_mapping({key: value})

    # Assert
    assert getattr(cfg, field) == expected


def test_explicit_candidates_win_over_the_automatic_heuristic() -> None:
    # Prepare
    auto = RunConfig.from_mapping({"k": 6})
    fixed = RunConfig.from_mapping({"k": 6, "candidates": 20})

    # Execute / Assert
    assert fixed.n_candidates(dim=41) == 20
    for dim in (3, 41):
        assert auto.n_candidates(dim=dim) >= auto.k  # a valid over-clustering start
    assert auto.n_candidates(dim=41) >= auto.n_candidates(dim=3)


_INVALID = [
    ({"k": 0}, "'k'"),
    ({"k": 101}, "'k'"),
    ({"k": 2.0}, "'k'"),
    ({"k": True}, "'k'"),
    ({"k": "6"}, "'k'"),
    ({"epsilon": 0}, "'epsilon'"),
    ({"epsilon": -1}, "'epsilon'"),
    ({"epsilon": -math.inf}, "'epsilon'"),
    ({"epsilon": math.nan}, "'epsilon'"),
    ({"epsilon": "1.0"}, "'epsilon'"),
    ({"epsilon": True}, "'epsilon'"),
    ({"delta": 0}, "'delta'"),
    ({"delta": 0.5}, "'delta'"),
    ({"delta": "inf"}, "'delta'"),
    ({"delta": math.inf}, "'delta'"),
    ({"rounds": -1}, "'rounds'"),
    ({"rounds": 51}, "'rounds'"),
    ({"init": "x"}, "'init'"),
    ({"init": 1}, "'init'"),
    ({"k": 6, "candidates": 1}, "'candidates'"),
    ({"k": 6, "candidates": 5}, "'candidates'"),
    ({"candidates": -1}, "'candidates'"),
    ({"min-segment-size": -1}, "'min_segment_size'"),
    ({"min-partners": 0}, "'min_partners'"),
    ({"seed": -1}, "'seed'"),
    ({"timeout": 0}, "'timeout'"),
    ({"timeout": math.inf}, "'timeout'"),
    ({"spec": 3}, "'spec'"),
    ({"out-dir": None}, "'out_dir'"),
    ({"epsilon_target": 1.0}, "'epsilon_target'"),
    ({"rounds-max": 3}, "'rounds_max'"),
]
_INVALID_IDS = [
    "k-zero", "k-101", "k-float", "k-bool", "k-string", "epsilon-zero", "epsilon-negative",
    "epsilon-minus-inf", "epsilon-nan", "epsilon-string", "epsilon-bool", "delta-zero",
    "delta-half", "delta-string-inf", "delta-inf", "rounds-negative", "rounds-51", "init-unknown",
    "init-not-string", "candidates-1-below-k", "candidates-5-below-k", "candidates-negative",
    "min-size-negative", "min-partners-zero", "seed-negative", "timeout-zero", "timeout-inf",
    "spec-not-string", "out-dir-none", "unknown-key", "unknown-dash-key",
]


@pytest.mark.parametrize(("mapping", "parameter"), _INVALID, ids=_INVALID_IDS)
def test_invalid_value_raises_contract_error_naming_the_parameter(mapping: dict[str, Any],
                                                                  parameter: str) -> None:
    # Execute / Assert
    with pytest.raises(ContractError) as info:
        RunConfig.from_mapping(mapping)
    assert parameter in str(info.value)


def test_node_config_keys_are_tolerated_in_a_run_config() -> None:
    # Execute
    cfg = RunConfig.from_mapping({"partition-id": 0, "num-partitions": 3, "k": 3})

    # Assert
    assert cfg.k == 3


def test_node_config_defaults_derive_from_the_partition_id() -> None:
    # Execute
    node = NodeConfig.from_mapping({"data-path": "data/p1.csv"}, partition_id=1)

    # Assert
    assert node.data_path == "data/p1.csv"
    assert node.partner_name == "partner-1"
    assert Path(node.state_dir) == Path(".fedprofile") / "partners" / "partner-1"
    assert node.noise_seed == -1


def test_node_config_explicit_values_win() -> None:
    # Execute
    node = NodeConfig.from_mapping({"partner-name": "bank-a", "state-dir": "/var/fp",
                                    "noise-seed": 5, "policy": "policy.toml"}, partition_id=4)

    # Assert
    assert (node.partner_name, node.state_dir, node.noise_seed, node.policy) == (
        "bank-a", "/var/fp", 5, "policy.toml")


@pytest.mark.parametrize(("mapping", "parameter"), [
    ({"noise-seed": -2}, "'noise_seed'"),
    ({"data-path": 3}, "'data_path'"),
    ({"partner-name": None}, "'partner_name'"),
], ids=["noise-seed-below-minus-one", "data-path-not-string", "name-none"])
def test_invalid_node_config_raises_contract_error_naming_the_parameter(
        mapping: dict[str, Any], parameter: str) -> None:
    # Execute / Assert
    with pytest.raises(ContractError, match=parameter):
        NodeConfig.from_mapping(mapping)


def test_k_auto_sets_the_range_and_announces_its_upper_bound() -> None:
    cfg = RunConfig.from_mapping({"k": "auto", "k-min": 3, "k-max": 8})
    assert (cfg.k_auto, cfg.k_min, cfg.k_max, cfg.k, cfg.fewest_segments) == (True, 3, 8, 8, 3)
    assert RunConfig.from_mapping({"k": 5}).fewest_segments == 5


@pytest.mark.parametrize("mapping, words", [
    ({"k": "auto", "init": "random"}, "over-clustering"),
    ({"k": "auto", "start-from": "runs/old/model.json"}, "start_from"),
    ({"k": "auto", "k-min": 6, "k-max": 4}, "'k_max'"),
    ({"k": "auto", "k-min": 1}, "'k_min'"),
    ({"k": "many"}, "'k'"),
])
def test_bad_k_settings_are_refused_by_name(mapping, words) -> None:
    with pytest.raises(ContractError, match=words):
        RunConfig.from_mapping(mapping)
