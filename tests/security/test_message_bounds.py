"""Received arrays and response-model requests are bounded before allocation or charging.

A dishonest coordinator may send a huge or crafted array, more segments than the partner
accepts, or a coefficient vector that does not fit the design: each is refused with an error
naming the problem, before memory is allocated for it and before the budget is touched.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, RecordDict

from fedprofile.client.app import gradient, gram, profile
from fedprofile.client.site import PartnerSite
from fedprofile.contract.design import design_names, design_norm_bound, target_bound
from fedprofile.errors import PolicyRefusedError, ProtocolError
from fedprofile.protocol import (
    GradientRequest,
    GramRequest,
    KMeansRequest,
    ProfileRequest,
    ResponseTask,
    codec,
)
from fedprofile.server.regression import ResponsePlan, plan_response

DELTA = 1e-6
POLICY_FEW_CENTRES = "max_candidate_centres = 8\n"


def _npy(shape: tuple[int, ...], dtype: str = "<f8", body: bytes = b"") -> bytes:
    """The bytes of a ``.npy`` file whose header claims ``shape``, followed by ``body``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + body


def _kmeans_record(centers: Array) -> RecordDict:
    content = KMeansRequest(run_id="r1", spec_fingerprint="f", stage="kmeans", round=1,
                            centers=np.zeros((2, 3)), sum_noise_multiplier=1.0,
                            count_noise_multiplier=1.0).to_record()
    content["arrays"] = ArrayRecord({"centers": centers})
    return content


# --- the codec: shape, bytes and dtype before the array is decoded ------------------------------


def test_an_array_whose_header_claims_billions_of_values_is_refused_unallocated() -> None:
    crafted = Array(dtype="float64", shape=(10**9, 10), stype="numpy.ndarray",
                    data=_npy((10**9, 10)))
    with pytest.raises(ProtocolError, match=r"10000000000 values; at most 4194304"):
        KMeansRequest.from_record(_kmeans_record(crafted))


def test_an_array_over_the_size_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_ARRAY_ELEMENTS", 100)
    content = _kmeans_record(Array(np.zeros((11, 10))))
    with pytest.raises(ProtocolError, match="'centers' of shape \\(11, 10\\) holds 110 values"):
        KMeansRequest.from_record(content)
    assert KMeansRequest.from_record(_kmeans_record(Array(np.zeros((10, 10))))).centers.shape \
        == (10, 10)


def test_message_bytes_beyond_the_limit_are_refused_before_the_header_is_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_ARRAY_ELEMENTS", 100)
    padded = Array(dtype="float64", shape=(2, 3), stype="numpy.ndarray",
                   data=_npy((2, 3), body=bytes(10**6)))
    with pytest.raises(ProtocolError, match="bytes; at most"):
        KMeansRequest.from_record(_kmeans_record(padded))


@pytest.mark.parametrize(("data", "problem"), [
    (_npy((2, 3), "<c16", bytes(96)), "must hold real numbers"),
    (_npy((2, 3), "<U4", bytes(96)), "must hold real numbers"),
    (_npy((2, 3), "|O", bytes(48)), "must hold real numbers"),
    (_npy((2, 3), "<f8", bytes(8)), "do not match its header"),
    (b"not an array at all", "not a valid NumPy array"),
])
def test_crafted_array_bytes_are_refused(data: bytes, problem: str) -> None:
    crafted = Array(dtype="float64", shape=(2, 3), stype="numpy.ndarray", data=data)
    with pytest.raises(ProtocolError, match=problem):
        KMeansRequest.from_record(_kmeans_record(crafted))


def test_an_array_in_another_serialization_is_refused() -> None:
    crafted = Array(dtype="float64", shape=(2, 3), stype="torch.tensor", data=_npy((2, 3)))
    with pytest.raises(ProtocolError, match=r"must be serialized as 'numpy\.ndarray'"):
        KMeansRequest.from_record(_kmeans_record(crafted))


def test_integer_arrays_are_accepted_as_float64() -> None:
    decoded = KMeansRequest.from_record(_kmeans_record(Array(np.arange(6).reshape(2, 3))))
    assert decoded.centers.dtype == np.float64


# --- the partner: segment count and theta length, before anything is charged -------------------


def _announce_logistic(site: PartnerSite, *, segment_aware: bool) -> ResponsePlan:
    spec = site.spec
    plan = plan_response(task="logistic", epsilon=1.0, delta=DELTA,
                         norm_bound=design_norm_bound(spec, "y", segment_aware=segment_aware),
                         target_bound=target_bound(spec, "y"))
    profile(ProfileRequest(run_id="run1", spec_fingerprint=spec.fingerprint(),
                           epsilon_target=1.0, delta=DELTA, stages=("logistic",),
                           planned_events=plan.events(), min_segment_size=50, target="y"),
            site)
    return plan


def _task(site: PartnerSite, segments: int, round: int = 0) -> ResponseTask:
    centers = np.random.default_rng(0).uniform(-0.1, 0.1, size=(segments, site.spec.dim))
    return ResponseTask(run_id="run1", spec_fingerprint=site.spec.fingerprint(),
                        stage="logistic", round=round, target="y", holdout=0.2,
                        holdout_seed=0, segment_centers=centers if segments else
                        np.zeros((0,)))


def _releases(site: PartnerSite) -> int:
    return len(site.ledger.events())


def test_a_gram_request_with_more_segments_than_the_policy_accepts_is_refused(
        make_site: Callable[..., PartnerSite]) -> None:
    # Prepare: a partner accepting at most 8 centres, and an accepted segment-aware run
    site = make_site(POLICY_FEW_CENTRES)
    plan = _announce_logistic(site, segment_aware=True)
    crafted = GramRequest(task=_task(site, segments=9), gram_noise_multiplier=plan.gram_z,
                          target_noise_multiplier=0.0, with_target=False)

    # Execute / Assert
    with pytest.raises(ProtocolError, match="9 centres; this partner accepts at most 8"):
        gram(crafted, site)
    assert _releases(site) == 0
    gram(replace(crafted, task=_task(site, segments=8)), site)  # within the bound: released
    assert _releases(site) == 1


def test_segments_sent_to_a_run_announced_without_them_are_refused(
        make_site: Callable[..., PartnerSite]) -> None:
    # Prepare: the plan's Gram sensitivity is that of a design without segments
    site = make_site()
    plan = _announce_logistic(site, segment_aware=False)
    crafted = GramRequest(task=_task(site, segments=4), gram_noise_multiplier=plan.gram_z,
                          target_noise_multiplier=0.0, with_target=False)

    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match="not in the run's announced plan"):
        gram(crafted, site)
    assert _releases(site) == 0


@pytest.mark.parametrize("extra", [-1, 1, 10**6])
def test_a_gradient_theta_that_does_not_fit_the_design_is_refused_before_any_work(
        make_site: Callable[..., PartnerSite], monkeypatch: pytest.MonkeyPatch,
        extra: int) -> None:
    # Prepare: an accepted run; the design must not even be built for a misfit theta
    site = make_site()
    plan = _announce_logistic(site, segment_aware=False)
    columns = len(design_names(site.spec, "y", 0))
    step = next(e for e in plan.events() if e.component == "gradient")
    crafted = GradientRequest(task=_task(site, segments=0, round=step.round),
                              theta=np.zeros(columns + extra), clip=plan.clip,
                              noise_multiplier=step.noise_multiplier)
    monkeypatch.setattr(PartnerSite, "design", lambda *a, **k: pytest.fail("design built"))

    # Execute / Assert
    with pytest.raises(ProtocolError, match=f"theta has {columns + extra} values; the design "
                                            f"has {columns} columns"):
        gradient(crafted, site)
    assert _releases(site) == 0
