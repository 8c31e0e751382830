"""Tests for partner policies: parsing the policy file and enforcing it against the ledger."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from fedprofile.errors import ContractError, PolicyRefusedError
from privacy.events import GaussianEvent, PrivacyEvent
from privacy.ledger import Ledger
from privacy.policy import ALL_STAGES, PartnerGuard, PartnerPolicy, load_policy
from server.kmeans import plan_kmeans

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


def _oracle_mu(epsilon: float, delta: float) -> float:
    def excess(mu: float) -> float:
        return float(norm.cdf(-epsilon / mu + mu / 2)
                     - math.exp(epsilon) * norm.cdf(-epsilon / mu - mu / 2)) - delta
    return float(brentq(excess, 1e-6, 50.0, xtol=1e-15, rtol=1e-15))


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
                                "allow_non_private": False}


def test_empty_policy_file_gets_defaults_but_forbids_non_private_runs(tmp_path: Path) -> None:
    # Execute
    policy = load_policy(_write(tmp_path, ""))

    # Assert
    assert policy.max_epsilon_per_run == math.inf
    assert policy.total_epsilon == math.inf
    assert policy.delta == 1e-6
    assert policy.allowed_stages == ALL_STAGES
    assert policy.allow_non_private is False
    assert policy.to_dict()["total_epsilon"] is None


def test_default_policy_without_a_file_allows_everything() -> None:
    # Execute
    policy = PartnerPolicy()

    # Assert
    assert policy.allow_non_private is True
    assert policy.allowed_stages == ALL_STAGES
    assert math.isinf(policy.max_epsilon_per_run)


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
], ids=["max-zero", "max-negative", "max-nan", "max-string", "total-bool", "total-zero",
        "delta-zero", "delta-above-one", "delta-inf", "min-size-negative", "min-size-float",
        "min-size-bool", "stage-unknown", "stages-not-a-list", "non-private-string"])
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


# --- PartnerGuard.check ----------------------------------------------------------------------


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(":memory:")


def test_plan_within_the_policy_is_accepted_and_nothing_is_recorded(ledger: Ledger) -> None:
    # Prepare
    guard = PartnerGuard(_design_policy(), ledger, "acme")

    # Execute
    guard.check(run_id="r1", stage="kmeans", events=_plan_events(1.0), delta=1e-6)

    # Assert
    assert ledger.events() == []
    assert ledger.notes() == []
    assert guard.remaining() == 4.0


def test_plan_over_the_per_run_limit_is_refused_naming_the_limit(ledger: Ledger) -> None:
    # Prepare
    policy = PartnerPolicy(max_epsilon_per_run=0.5, total_epsilon=4.0)
    guard = PartnerGuard(policy, ledger, "acme")

    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match=r"epsilon = 1 of its data, above its limit "
                                                  r"of 0\.5 per run") as info:
        guard.check(run_id="r1", stage="kmeans", events=_plan_events(1.0), delta=1e-6)
    assert "'acme'" in str(info.value)


def test_per_run_limit_counts_releases_already_made_in_the_same_run(ledger: Ledger) -> None:
    # Prepare: half of the run's budget twice is sqrt(2) * mu(0.5) in GDP, above 0.5
    guard = PartnerGuard(PartnerPolicy(max_epsilon_per_run=0.5), ledger, "acme")
    guard.authorize(run_id="r1", stage="kmeans", events=_plan_events(0.5), delta=1e-6)

    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match=r"limit of 0\.5 per run"):
        guard.check(run_id="r1", stage="kmeans", events=_plan_events(0.5), delta=1e-6)
    guard.check(run_id="r2", stage="kmeans", events=_plan_events(0.5), delta=1e-6)


def test_stage_not_allowed_is_refused_naming_the_stage(ledger: Ledger) -> None:
    # Prepare
    guard = PartnerGuard(_design_policy(), ledger, "acme")

    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match="stage 'ridge' is not in its allowed stages"):
        guard.check(run_id="r1", stage="ridge", events=(), delta=1e-6)


def test_larger_delta_is_refused_naming_both_deltas(ledger: Ledger) -> None:
    # Prepare
    guard = PartnerGuard(_design_policy(), ledger, "acme")

    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match=r"delta 1e-05 is larger than its policy's "
                                                  r"delta 1e-06"):
        guard.check(run_id="r1", stage="kmeans", events=_plan_events(1.0), delta=1e-5)


def test_smaller_delta_is_accepted(ledger: Ledger) -> None:
    # Prepare
    guard = PartnerGuard(_design_policy(), ledger, "acme")

    # Execute / Assert (no exception)
    guard.check(run_id="r1", stage="kmeans", events=_plan_events(1.0), delta=1e-8)


def test_non_private_run_is_refused_when_the_policy_forbids_it(ledger: Ledger) -> None:
    # Prepare
    guard = PartnerGuard(_design_policy(), ledger, "acme")

    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match="non-private"):
        guard.check(run_id="r1", stage="kmeans", events=_plan_events(math.inf), delta=1e-6)


def test_non_private_run_is_accepted_by_the_permissive_default_policy(ledger: Ledger) -> None:
    # Prepare
    guard = PartnerGuard(PartnerPolicy(), ledger, "sim")

    # Execute
    guard.authorize(run_id="r1", stage="kmeans", events=_plan_events(math.inf), delta=1e-6)

    # Assert
    assert ledger.spend(party="sim", delta=1e-6).epsilon == math.inf


def test_non_private_run_is_refused_by_a_finite_limit_even_if_allowed(ledger: Ledger) -> None:
    # Prepare
    policy = PartnerPolicy(max_epsilon_per_run=10.0, allow_non_private=True)
    guard = PartnerGuard(policy, ledger, "acme")

    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match="limit of 10 per run"):
        guard.check(run_id="r1", stage="kmeans", events=_plan_events(math.inf), delta=1e-6)


def test_runs_are_authorized_until_the_total_budget_is_reached(ledger: Ledger) -> None:
    # Prepare: runs of epsilon 1 are mu1-GDP each; n runs compose to sqrt(n) * mu1, so the
    # lifetime budget epsilon 4 (mu4-GDP) admits floor((mu4 / mu1)**2) runs (= 12).
    guard = PartnerGuard(_design_policy(), ledger, "acme")
    expected_runs = math.floor((_oracle_mu(4.0, 1e-6) / _oracle_mu(1.0, 1e-6)) ** 2)
    accepted = 0

    # Execute
    with pytest.raises(PolicyRefusedError, match="total budget of 4") as info:
        for run in range(100):
            guard.authorize(run_id=f"run-{run}", stage="kmeans", events=_plan_events(1.0),
                            delta=1e-6)
            accepted += 1

    # Assert
    assert expected_runs == 12
    assert accepted == expected_runs
    lifetime = ledger.spend(party="acme", delta=1e-6)
    assert lifetime.releases == 8 * expected_runs
    assert lifetime.epsilon <= 4.0
    assert guard.remaining() == pytest.approx(4.0 - lifetime.epsilon)
    assert f"({guard.remaining():.4g} left)" in str(info.value)
    refused = f"run-{expected_runs}"
    assert ledger.events(run_id=refused) == []
    notes = ledger.notes(run_id=refused)
    assert len(notes) == 1
    assert notes[0]["kind"] == "refusal"
    assert "total budget of 4" in notes[0]["message"]


@pytest.mark.parametrize(("stage", "delta", "events", "fragment"), [
    ("ridge", 1e-6, (), "stage 'ridge'"),
    ("kmeans", 1e-3, (), "delta 0.001"),
    ("kmeans", 1e-6, "non-private", "non-private"),
    ("kmeans", 1e-6, "over-limit", "limit of 1 per run"),
], ids=["stage", "delta", "non-private", "per-run-limit"])
def test_every_refusal_is_noted_in_the_ledger(ledger: Ledger, stage: str, delta: float,
                                              events: object, fragment: str) -> None:
    # Prepare
    guard = PartnerGuard(_design_policy(), ledger, "acme")
    planned: tuple[PrivacyEvent, ...] = ()
    if events == "non-private":
        planned = _plan_events(math.inf)
    elif events == "over-limit":
        planned = _plan_events(2.0)

    # Execute
    with pytest.raises(PolicyRefusedError):
        guard.check(run_id="r9", stage=stage, events=planned, delta=delta)

    # Assert
    notes = ledger.notes(run_id="r9")
    assert [(n["party"], n["kind"]) for n in notes] == [("acme", "refusal")]
    assert fragment in notes[0]["message"]
    assert ledger.events() == []


def test_remaining_budget_shrinks_with_recorded_releases(ledger: Ledger) -> None:
    # Prepare
    guard = PartnerGuard(_design_policy(), ledger, "acme")
    event = GaussianEvent(noise_multiplier=8.0, sensitivity=1.0, stage="kmeans", round=1,
                          component="counts")

    # Execute
    guard.authorize(run_id="r1", stage="kmeans", events=[event], delta=1e-6)

    # Assert
    spent = ledger.spend(party="acme", delta=1e-6).epsilon
    assert 0 < spent < 4.0
    assert guard.remaining() == pytest.approx(4.0 - spent)
