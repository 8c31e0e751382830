"""Lookalike instructions driven at one partner, as a dishonest coordinator would send them.

The seed owner refuses a seed below its ``min_seed_size`` without saying how small it is;
a lookalike release is charged to the ``lookalike`` stage whatever the request's label, so
a run announced as logistic regression cannot obtain one; and nothing is charged before.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedprofile.client.app import gram, profile
from fedprofile.client.checks import NotReadyError
from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.contract.lookalike import SeedAudience, lookalike_norm_bound
from fedprofile.errors import PolicyRefusedError, ProtocolError
from fedprofile.privacy.ledger import Ledger
from fedprofile.protocol import GramRequest, ProfileRequest, ResponseTask
from fedprofile.server.regression import plan_response

DELTA = 1e-6
SEED = SeedAudience(partner="acme", expr='y == "yes"')


def _site(tmp_path: Path, bank_slice: tuple[Path, Path], policy: str) -> PartnerSite:
    data, spec = bank_slice
    (tmp_path / "policy.toml").write_text(policy, encoding="utf-8")
    return PartnerSite(NodeConfig(data_path=str(data), spec=str(spec), partner_name="acme",
                                  state_dir=str(tmp_path / "state"),
                                  policy=str(tmp_path / "policy.toml"),
                                  output_dir=str(tmp_path / "outputs")))


def _profile(site: PartnerSite, stages: tuple[str, ...], seed: SeedAudience | None
             ) -> ProfileRequest:
    plan = plan_response(task="logistic", epsilon=1.0, delta=DELTA,
                         norm_bound=lookalike_norm_bound(site.spec, SEED), target_bound=1.0,
                         stage=stages[0])
    return ProfileRequest(run_id="run1", spec_fingerprint=site.spec.fingerprint(),
                          epsilon_target=1.0, delta=DELTA, stages=stages,
                          planned_events=plan.events(), min_segment_size=0,
                          target="y" if stages[0] == "logistic" else "", seed=seed)


def _releases(site: PartnerSite) -> list:
    with Ledger(site.state_dir / "ledger.sqlite") as ledger:
        return ledger.events()


def test_a_seed_below_the_minimum_is_refused_without_its_size(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    # Prepare: the 600 customers' seed is smaller than the policy's minimum
    site = _site(tmp_path, bank_slice, "min_seed_size = 5000\n")
    size = int((pd.read_csv(bank_slice[0])["y"] == "yes").sum())
    # Execute
    with pytest.raises(NotReadyError) as info:
        profile(_profile(site, ("lookalike",), SEED), site)
    # Assert: the limit is named, the seed's size only in the local hint
    assert "minimum of 5000 customers (policy 'min_seed_size')" in str(info.value)
    assert str(size) not in re.sub(r"5000", "", str(info.value))
    assert str(size) in info.value.hint
    assert _releases(site) == []


def test_a_lookalike_release_in_a_logistic_run_is_charged_as_lookalike_and_refused(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    # Prepare: the run announced logistic regression only
    site = _site(tmp_path, bank_slice, "min_seed_size = 1\n")
    announced = _profile(site, ("logistic",), None)
    profile(announced, site)
    task = ResponseTask(run_id="run1", spec_fingerprint=site.spec.fingerprint(),
                        stage="logistic", round=0, target="", holdout=0.2, holdout_seed=0,
                        segment_centers=np.zeros((0,)), seed=SEED)
    z = announced.planned_events[0].noise_multiplier
    crafted = GramRequest(task=task, gram_noise_multiplier=z, target_noise_multiplier=0.0,
                          with_target=False)
    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match="stage 'lookalike' is not among the stages"):
        gram(crafted, site)
    assert _releases(site) == []


def test_the_seed_owner_accepts_a_large_enough_seed_and_charges_lookalike(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    site = _site(tmp_path, bank_slice, "min_seed_size = 1\n")
    announced = _profile(site, ("lookalike",), SEED)
    profile(announced, site)
    task = ResponseTask(run_id="run1", spec_fingerprint=site.spec.fingerprint(),
                        stage="lookalike", round=0, target="", holdout=0.2, holdout_seed=0,
                        segment_centers=np.zeros((0,)), seed=SEED)
    z = announced.planned_events[0].noise_multiplier
    reply = gram(GramRequest(task=task, gram_noise_multiplier=z, target_noise_multiplier=0.0,
                             with_target=False), site)
    assert [e.stage for e in reply.events] == ["lookalike"]
    assert [e.stage for e in _releases(site)] == ["lookalike"]


def test_a_lookalike_gram_request_asking_for_a_target_column_is_refused(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    """Z'y of the seed labels (0/1) would be released at a numeric target's sensitivity."""
    # Prepare: a lookalike run announced with an extra ``xty`` release of a numeric target
    site = _site(tmp_path, bank_slice, "min_seed_size = 1\nmax_epsilon_per_run = 2\n")
    announced = _profile(site, ("lookalike",), SEED)
    gram_event = announced.planned_events[0]
    xty = replace(gram_event, component="xty", sensitivity=gram_event.sensitivity ** 0.5 / 2)
    profile(replace(announced, planned_events=(*announced.planned_events, xty)), site)
    task = ResponseTask(run_id="run1", spec_fingerprint=site.spec.fingerprint(),
                        stage="lookalike", round=0, target="balance", holdout=0.2,
                        holdout_seed=0, segment_centers=np.zeros((0,)), seed=SEED)
    z = gram_event.noise_multiplier

    # Execute / Assert: refused, nothing charged
    with pytest.raises(ProtocolError, match="lookalike model's Gram release has no target"):
        gram(GramRequest(task=task, gram_noise_multiplier=z, target_noise_multiplier=z,
                         with_target=True), site)
    assert _releases(site) == []
