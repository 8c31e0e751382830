"""The partner's releases of sums: k-means sums and counts, the Gram release, gradients.

Each checks the request against the contract and its bounds before anything is computed,
authorises its events with the partner's guard and adds the noise itself, or hands its
values to secure aggregation (``mask``), which adds a share of it.
"""

from __future__ import annotations

import numpy as np

from fedprofile.client.lookalike import (
    design_bound,
    design_rows,
    design_width,
)
from fedprofile.client.response import clipped_gradient_sum, gram_statistics
from fedprofile.client.secure import (
    masked_release,
)
from fedprofile.client.site import PartnerSite
from fedprofile.client.statistics import cluster_partials
from fedprofile.contract.design import target_bound
from fedprofile.errors import (
    ContractError,
    ProtocolError,
)
from fedprofile.privacy.mechanisms import GaussianMechanism
from fedprofile.privacy.secagg.messages import MaskRequest
from fedprofile.protocol import (
    GradientReply,
    GradientRequest,
    GramReply,
    GramRequest,
    KMeansReply,
    KMeansRequest,
    ResponseTask,
)
from fedprofile.protocol.secagg import SecaggMasked, secure_sum_for

__all__ = ["gradient", "gram", "kmeans"]


def _check_centre_count(site: PartnerSite, count: int, what: str) -> None:
    limit = site.policy.max_candidate_centres
    if count > limit:
        raise ProtocolError(f"{what}: {count} centres; this partner accepts at most {limit} "
                            "(policy 'max_candidate_centres').")


def kmeans(request: KMeansRequest, site: PartnerSite, mask: MaskRequest | None = None
           ) -> KMeansReply | SecaggMasked:
    """Noised per-centre sums and counts of the partner's customers.

    The sums are of the customers' vectors, or with the request's ``radius`` of their
    displacements from their centres shortened to it
    (:func:`fedprofile.client.statistics.cluster_partials`).

    With ``mask`` (``noise = 'secagg'``) the partner adds only its noise share and replies
    with the masked vector (:func:`fedprofile.client.secure.masked_release`).
    """
    site.check_contract(request.spec_fingerprint)
    if request.centers.shape[1] != site.spec.dim:
        raise ProtocolError(f"train.kmeans request: centres have {request.centers.shape[1]} "
                            f"coordinates; the contract has {site.spec.dim}.")
    _check_centre_count(site, request.centers.shape[0], "train.kmeans request")
    sum_mech = GaussianMechanism(sensitivity=request.sums_sensitivity(site.spec.norm_bound),
                                 noise_multiplier=request.sum_noise_multiplier)
    count_mech = GaussianMechanism(sensitivity=1.0,
                                   noise_multiplier=request.count_noise_multiplier)
    events = (sum_mech.event(component="sums", stage=request.stage, round=request.round),
              count_mech.event(component="counts", stage=request.stage, round=request.round))
    sums, counts = cluster_partials(site.matrix(), request.centers, request.radius)
    rng = site.rng(run_id=request.run_id, stage=request.stage, round=request.round,
                   request=request.centers)
    if mask is not None:
        parts = secure_sum_for(request, norm_bound=site.spec.norm_bound)
        return masked_release(site, mask, run_id=request.run_id, stage="kmeans",
                              secure_sum=parts, values=[sums, counts], events=events, rng=rng)
    site.guard.authorize(run_id=request.run_id, stage="kmeans", events=events)
    return KMeansReply(sums=sum_mech.randomise(sums, rng),
                       counts=count_mech.randomise(counts, rng), events=events)


def _response_stage(site: PartnerSite, task: ResponseTask) -> str:
    """The policy stage of a Gram release: lookalike, or from the target's kind."""
    if task.seed is not None:
        return "lookalike"
    target = site.spec.targets.get(task.target)
    if target is None:
        raise ContractError(f"Target {task.target!r} is not declared in the partner's contract.")
    _check_centre_count(site, task.segment_centers.shape[0], f"{task.stage} request segments")
    return "logistic" if target.kind == "binary" else "ridge"


def gram(request: GramRequest, site: PartnerSite, mask: MaskRequest | None = None
         ) -> GramReply | SecaggMasked:
    """Noised ``Z'Z`` (and ``Z'y``) of the partner's training customers (or masked shares)."""
    task = request.task
    site.check_contract(task.spec_fingerprint)
    stage = _response_stage(site, task)
    if stage == "lookalike" and request.with_target:
        raise ProtocolError("train.gram request: a lookalike model's Gram release has no "
                            "target column (its labels are the seed's, learnt by gradient).")
    bound = design_bound(site, task)
    gram_mech = GaussianMechanism(sensitivity=bound**2,
                                  noise_multiplier=request.gram_noise_multiplier)
    events = [gram_mech.event(component="gram", stage=stage, round=task.round)]
    target_mech = None
    if request.with_target:
        target_mech = GaussianMechanism(
            sensitivity=bound * target_bound(site.spec, task.target),
            noise_multiplier=request.target_noise_multiplier)
        events.append(target_mech.event(component="xty", stage=stage, round=task.round))
    data = design_rows(site, task)
    upper, xty = gram_statistics(data.z_train, data.y_train if target_mech else None)
    rng = site.rng(run_id=task.run_id, stage=stage, round=task.round,
                   request=task.segment_centers)
    if mask is not None:
        parts = secure_sum_for(request, norm_bound=bound, dim=data.z_train.shape[1],
                               target_bound=target_bound(site.spec, task.target))
        return masked_release(site, mask, run_id=task.run_id, stage=stage, secure_sum=parts,
                              values=[upper, xty], events=tuple(events), rng=rng)
    site.guard.authorize(run_id=task.run_id, stage=stage, events=events)
    return GramReply(gram_upper=gram_mech.randomise(upper, rng),
                     xty=target_mech.randomise(xty, rng) if target_mech else xty,
                     events=tuple(events))


def gradient(request: GradientRequest, site: PartnerSite, mask: MaskRequest | None = None
             ) -> GradientReply | SecaggMasked:
    """Noised sum of the per-customer clipped logistic-loss gradients at ``theta``."""
    task = request.task
    site.check_contract(task.spec_fingerprint)
    stage = _response_stage(site, task)
    if stage == "ridge":
        raise ContractError(f"Logistic regression needs a binary target; {task.target!r} is "
                            "not one in the contract.")
    columns = design_width(site, task)
    if len(request.theta) != columns:  # checked before the design is built or anything charged
        raise ProtocolError(f"train.gradient request: theta has {len(request.theta)} values; "
                            f"the design has {columns} columns.")
    mech = GaussianMechanism(sensitivity=request.clip, noise_multiplier=request.noise_multiplier)
    events = (mech.event(component="gradient", stage=stage, round=task.round),)
    data = design_rows(site, task)
    total = clipped_gradient_sum(data.z_train, data.y_train, request.theta, request.clip)
    rng = site.rng(run_id=task.run_id, stage=stage, round=task.round,
                   request=np.concatenate([request.theta, [request.clip]]))
    if mask is not None:
        return masked_release(site, mask, run_id=task.run_id, stage=stage,
                              secure_sum=secure_sum_for(request, norm_bound=0.0, dim=columns),
                              values=[total], events=events, rng=rng)
    site.guard.authorize(run_id=task.run_id, stage=stage, events=events)
    return GradientReply(gradient=mech.randomise(total, rng), events=events)
