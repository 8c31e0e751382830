"""A partner's announcement and error handling: nothing recorded when it cannot serve a run,
refusals that group across partners, budget checked ahead, no traceback in its log."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedprofile.client.app import error_for, profile
from fedprofile.client.checks import NotReadyError, budget_problem
from fedprofile.client.secure import as_skellam, trust_each_other
from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.errors import PolicyRefusedError
from fedprofile.privacy.accounting import composed_epsilon, planning_epsilon
from fedprofile.privacy.ledger import Ledger
from fedprofile.privacy.policy import epsilon_left
from fedprofile.protocol import ErrorCode, ProfileRequest
from fedprofile.server.federation import group_reasons
from fedprofile.server.kmeans import plan_kmeans

DELTA = 1e-6
SPEC = """
[features.age]
kind = "numeric"
bounds = [18, 95]

[features.color]
kind = "categorical"
categories = ["red", "blue"]
other = true
"""
POLICY = "max_epsilon_per_run = 1.0\ntotal_epsilon = 1.2\n"


def _site(tmp_path: Path, name: str, *, rows: int = 400, policy: str = POLICY,
          colors: tuple[str, ...] = ("red", "blue")) -> PartnerSite:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    frame = pd.DataFrame({"age": np.arange(rows) % 70 + 20,
                          "color": [colors[i % len(colors)] for i in range(rows)]})
    data, spec, pol = folder / "data.csv", tmp_path / "spec.toml", folder / "policy.toml"
    frame.to_csv(data, index=False)
    spec.write_text(SPEC)
    pol.write_text(policy)
    return PartnerSite(NodeConfig(data_path=str(data), spec=str(spec), partner_name=name,
                                  state_dir=str(folder / "state"), policy=str(pol)))


def _request(site: PartnerSite, *, run_id: str = "run1", k: int = 4,
             epsilon: float = 1.0) -> ProfileRequest:
    events = plan_kmeans(epsilon=epsilon, delta=DELTA, lloyd_rounds=3,
                         norm_bound=site.spec.norm_bound).events()
    return ProfileRequest(run_id=run_id, spec_fingerprint=site.spec.fingerprint(),
                          epsilon_target=epsilon, delta=DELTA, stages=("kmeans",),
                          planned_events=events, min_segment_size=50, k=k)


def _recorded(site: PartnerSite) -> tuple[int, int, int]:
    with Ledger(site.state_dir / "ledger.sqlite") as book:
        return (len(book.runs()), len(book.notes()),
                int(book.plan(run_id="run1", party=site.name) is not None))


def test_a_partner_that_cannot_serve_the_run_records_nothing(tmp_path: Path) -> None:
    # Prepare: 100 customers, asked for 4 segments of at least 50
    site = _site(tmp_path, "acme", rows=100)
    # Execute
    with pytest.raises(NotReadyError, match="k=4 segments"):
        profile(_request(site, k=4), site)
    # Assert: no run, no plan, no note in its ledger
    assert _recorded(site) == (0, 0, 0)
    profile(_request(site, k=2), site)  # 2 x 50 fits: accepted and recorded
    assert _recorded(site) == (1, 0, 1)


def test_budget_refusals_name_no_partner_and_group(tmp_path: Path) -> None:
    # Prepare: two partners that each spent a run of epsilon = 1 of a total of 1.2
    sites = [_site(tmp_path, name) for name in ("acme", "globex")]
    reasons = {}
    for site in sites:
        site.ledger.record(run_id="old", party=site.name, events=_request(site).planned_events,
                           delta=DELTA)
        # Execute
        ahead = budget_problem(site, epsilon=1.0, delta=DELTA)
        with pytest.raises(PolicyRefusedError) as info:
            profile(_request(site), site)
        reasons[site.name] = error_for(info.value, site, "query.profile").reason
        # Assert: the check made ahead agrees with the guard's refusal and names the budget
        assert ahead is not None and "this run requests epsilon = 1." in ahead
        assert "at most epsilon = 0." in ahead
        assert site.name not in reasons[site.name]
    assert group_reasons(reasons, total=2).startswith("all 2 partners: Policy refusal:")
    assert budget_problem(sites[0], epsilon=0.1, delta=DELTA) is None


def test_a_non_private_run_is_refused_ahead_when_the_policy_forbids_it(tmp_path: Path) -> None:
    site = _site(tmp_path, "acme", policy="allow_non_private = false\n")
    assert "non-private" in (budget_problem(site, epsilon=float("inf"), delta=DELTA) or "")
    assert budget_problem(site, epsilon=1.0, delta=DELTA) is None


def test_an_unexpected_error_is_logged_without_a_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: an error raised while a local holds a customer value
    site = _site(tmp_path, "acme")

    def fail() -> None:
        secret_row = "CANARY-ROW-4711"  # noqa: F841 - a local a traceback would show
        raise KeyError("age")

    try:
        fail()
    except KeyError as exc:
        # Execute
        with caplog.at_level(logging.DEBUG, logger="fedprofile.client"):
            reply = error_for(exc, site, "train.kmeans")
    # Assert: type, message and place only; no traceback, no local value
    assert reply.code == ErrorCode.INTERNAL
    record = caplog.records[-1]
    assert record.exc_info is None and record.levelno == logging.ERROR
    assert "KeyError" in record.getMessage() and "'age'" in record.getMessage()
    assert "test_partner_refusals.py" in record.getMessage()
    assert "CANARY" not in caplog.text


def test_a_partner_logs_its_data_quality_warnings_as_counts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: a third of the colours are undeclared, one close to a category
    site = _site(tmp_path, "acme", colors=("red", "blue", "Rde"))
    # Execute
    with caplog.at_level(logging.INFO, logger="fedprofile.client"):
        site.matrix()
    # Assert: one warning with the counts; no value of the data
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "400 rows, 400 customers, 0 dropped" in text and "'color'" in text
    assert "(other)" in text and "Rde" not in caplog.text


def test_a_secure_run_is_judged_at_its_rdp_epsilon_when_announced(tmp_path: Path) -> None:
    # Prepare: three partners that trust each other's keys, each allowing 0.95 per run; a
    # secure run of target 1 plans its releases at the lower GDP epsilon (0.927) whose
    # Renyi-DP accounting -- how its Skellam releases are charged -- is 1
    policy = "max_epsilon_per_run = 0.95\n"
    sites = [_site(tmp_path, name, policy=policy) for name in ("acme", "globex", "initech")]
    trust_each_other({s.name: s.state_dir for s in sites})
    site = sites[0]
    planned = planning_epsilon(1.0, DELTA)
    assert planned < 0.95
    secure = replace(_request(site, epsilon=planned), noise="secagg", partners=3)
    # Execute / Assert: refused when announced, before any release is spent or recorded
    assert "at most epsilon = 0.95 per run" in (
        budget_problem(site, epsilon=1.0, delta=DELTA, noise="secagg") or "")
    with pytest.raises(PolicyRefusedError, match="epsilon = 1 of its data"):
        profile(secure, site)
    assert _recorded(site) == (0, 1, 0)
    # the same plan with partner noise is charged in GDP (0.927) and accepted
    assert budget_problem(site, epsilon=planned, delta=DELTA) is None
    profile(_request(site, epsilon=planned), site)
    assert _recorded(site)[2] == 1


def test_the_budget_left_after_a_secure_run_is_rdp_accounted(tmp_path: Path) -> None:
    # Prepare: a partner with a lifetime budget of 2 that spent a secure run of epsilon 1
    site = _site(tmp_path, "acme", policy="max_epsilon_per_run = 2.0\ntotal_epsilon = 2.0\n")
    spent = [as_skellam(e) for e in plan_kmeans(
        epsilon=planning_epsilon(1.0, DELTA), delta=DELTA, lloyd_rounds=3,
        norm_bound=site.spec.norm_bound).events()]
    assert composed_epsilon(spent, DELTA) == pytest.approx(1.0, rel=1e-9)
    for secure in (False, True):
        # Execute: what a next run of each placement may request
        left = epsilon_left(site.policy, spent, secure=secure)
        planned = planning_epsilon(left, DELTA) if secure else left
        nxt = plan_kmeans(epsilon=planned, delta=DELTA, lloyd_rounds=3,
                          norm_bound=site.spec.norm_bound).events()
        nxt = [as_skellam(e) for e in nxt] if secure else nxt
        # Assert: a run of exactly that epsilon brings the lifetime spend to the budget
        assert composed_epsilon([*spent, *nxt], DELTA) == pytest.approx(2.0, rel=1e-6)
    # GDP accounting of the same releases would promise more than the budget holds
    gaussian = plan_kmeans(epsilon=planning_epsilon(1.0, DELTA), delta=DELTA, lloyd_rounds=3,
                           norm_bound=site.spec.norm_bound).events()
    assert epsilon_left(site.policy, gaussian) > epsilon_left(site.policy, spent)
