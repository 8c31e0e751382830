"""A refused release leaves a note in the partner's own ledger: the reason, never data.

The partner's ledger is its audit trail: besides every release it made, it records every
release it refused (a release outside the announced plan, an unannounced run, a request out
of bounds), so an operator can see what a coordinator asked for. A note names the problem
and the public request parameters; it holds no customer value and records no spend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from fedprofile.client.app import checked_step, kmeans, profile
from fedprofile.client.site import PartnerSite
from fedprofile.errors import PolicyRefusedError, ProtocolError
from fedprofile.protocol import KMeansRequest, ProfileRequest
from fedprofile.server.kmeans import plan_kmeans

DELTA = 1e-6
POLICY_FEW_CENTRES = "max_candidate_centres = 8\n"


def _announce(site: PartnerSite, run_id: str = "run1") -> ProfileRequest:
    events = plan_kmeans(epsilon=1.0, delta=DELTA, lloyd_rounds=3,
                         norm_bound=site.spec.norm_bound).events()
    request = ProfileRequest(run_id=run_id, spec_fingerprint=site.spec.fingerprint(),
                             epsilon_target=1.0, delta=DELTA, stages=("kmeans",),
                             planned_events=events, min_segment_size=50, k=4)
    profile(request, site)
    return request


def _kmeans(site: PartnerSite, request: ProfileRequest, centres: int = 4) -> KMeansRequest:
    sums, counts = request.planned_events[2], request.planned_events[3]
    centers = np.random.default_rng(1).uniform(-0.1, 0.1, size=(centres, site.spec.dim))
    return KMeansRequest(run_id=request.run_id, spec_fingerprint=site.spec.fingerprint(),
                         stage=sums.stage, round=sums.round, centers=centers,
                         sum_noise_multiplier=sums.noise_multiplier,
                         count_noise_multiplier=counts.noise_multiplier)


def _assert_no_data(note: dict, site: PartnerSite, request: KMeansRequest) -> None:
    """The note names no customer value, no centre coordinate and no local path."""
    table = site.customers()
    text = note["message"]
    assert str(site.config.data_path) not in text and str(site.state_dir) not in text
    for value in table.select_dtypes("number").iloc[:20].to_numpy().ravel():
        if abs(value) > 1000:  # distinctive values only (small integers appear in any text)
            assert f"{value:g}" not in text
    for value in request.centers.ravel()[:20]:
        assert f"{value:.6g}" not in text


def test_a_release_outside_the_plan_leaves_a_refusal_note(
        make_site: Callable[..., PartnerSite]) -> None:
    # Prepare: an accepted run, then a request with a tenth of the planned noise
    site = make_site()
    request = _announce(site)
    weaker = _kmeans(site, request)
    weaker = replace(weaker, sum_noise_multiplier=weaker.sum_noise_multiplier / 10)

    # Execute
    with pytest.raises(PolicyRefusedError):
        checked_step(kmeans, weaker, site)

    # Assert: one refusal note naming the reason; nothing spent
    (note,) = site.ledger.notes(run_id="run1")
    assert note["kind"] == "refusal" and note["party"] == "acme"
    assert "not in the run's announced plan" in note["message"]
    assert site.ledger.events() == []
    _assert_no_data(note, site, weaker)


def test_a_release_for_an_unannounced_run_leaves_a_refusal_note(
        make_site: Callable[..., PartnerSite]) -> None:
    site = make_site()
    request = replace(_kmeans(site, _announce(site)), run_id="never-announced")
    with pytest.raises(PolicyRefusedError):
        checked_step(kmeans, request, site)
    (note,) = site.ledger.notes(run_id="never-announced")
    assert note["kind"] == "refusal" and "never announced" in note["message"]
    assert site.ledger.events() == []


def test_a_request_out_of_bounds_leaves_a_refusal_note(
        make_site: Callable[..., PartnerSite]) -> None:
    # Prepare: a partner accepting at most 8 centres receives 9 for an accepted run
    site = make_site(POLICY_FEW_CENTRES)
    request = _kmeans(site, _announce(site), centres=9)

    # Execute
    with pytest.raises(ProtocolError):
        checked_step(kmeans, request, site)

    # Assert
    (note,) = site.ledger.notes(run_id="run1")
    assert note["kind"] == "refusal"
    assert "9 centres; this partner accepts at most 8" in note["message"]
    assert site.ledger.events() == []
    _assert_no_data(note, site, request)


def test_an_accepted_release_leaves_no_note(make_site: Callable[..., PartnerSite]) -> None:
    site = make_site()
    checked_step(kmeans, _kmeans(site, _announce(site)), site)
    assert site.ledger.notes() == []
    assert len(site.ledger.events()) == 2
