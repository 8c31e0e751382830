"""The partner's ClientApp: thin handlers over named steps.

Each handler parses the instruction, checks the contract and the partner's policy, computes
the local statistic, adds calibrated noise, records the release in the partner's ledger
*before* replying, and replies. Errors become error replies whose text names the problem and
never holds data values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from fedprofile.client.capture import make_capture_mod
from fedprofile.client.checks import NotReadyError, check_ready
from fedprofile.client.redact import redact_local_paths
from fedprofile.client.response import clipped_gradient_sum, gram_statistics
from fedprofile.client.secure import (
    Masked,
    Reply,
    masked_release,
    secagg_keys,
    secagg_shares,
    secagg_unmask,
)
from fedprofile.client.site import PartnerSite
from fedprofile.client.statistics import cluster_partials
from fedprofile.contract.design import design_names, design_norm_bound, target_bound
from fedprofile.errors import (
    BudgetExceededError,
    ContractError,
    DataError,
    PolicyRefusedError,
    ProtocolError,
)
from fedprofile.io.tables import write_table
from fedprofile.models.response_model import ResponseModel
from fedprofile.models.scoring import score_customers
from fedprofile.models.segment_model import SegmentModel
from fedprofile.privacy.mechanisms import GaussianMechanism
from fedprofile.privacy.secagg.messages import KeyBroadcast, MaskRequest, UnmaskRequest
from fedprofile.protocol import (
    ErrorCode,
    GradientReply,
    GradientRequest,
    GramReply,
    GramRequest,
    KMeansReply,
    KMeansRequest,
    ProfileReply,
    ProfileRequest,
    ResponseTask,
    ScoreReply,
    ScoreRequest,
)
from fedprofile.protocol.secagg import SecaggMasked, SecaggSetup, decode, secure_sum_for

__all__ = ["app", "build_client_app", "checked_step", "error_for", "gradient", "gram", "kmeans",
           "profile", "score"]

log = logging.getLogger("fedprofile.client")

_ERROR_CODES: tuple[tuple[type[Exception], int], ...] = (
    (PolicyRefusedError, ErrorCode.POLICY_REFUSED),
    (BudgetExceededError, ErrorCode.POLICY_REFUSED),
    (ContractError, ErrorCode.CONTRACT_MISMATCH),
    (DataError, ErrorCode.DATA_ERROR),
    (ProtocolError, ErrorCode.PROTOCOL_ERROR),
)


def profile(request: ProfileRequest, site: PartnerSite) -> ProfileReply:
    """Accept the announced run and its whole plan against the policy; release nothing.

    The plan is stored in the partner's ledger: every later release of the run must be one
    of its releases. The data is checked against the run (``k``, ``target``) so that a run
    that cannot finish is refused before anything is spent or recorded.
    """
    site.check_contract(request.spec_fingerprint)
    check_ready(site, k=request.k or None, target=request.target or None,
                min_segment_size=max(request.min_segment_size, site.policy.min_segment_size))
    site.guard.accept_plan(run_id=request.run_id, stages=request.stages,
                           events=request.planned_events, delta=request.delta,
                           min_segment_size=request.min_segment_size)
    site.ledger.start_run(run_id=request.run_id, party=site.name,
                          epsilon_target=request.epsilon_target, delta=request.delta)
    return ProfileReply(partner=site.name, spec_fingerprint=site.spec.fingerprint(),
                        key_id=site.key_id,
                        max_epsilon_per_run=site.policy.max_epsilon_per_run,
                        epsilon_remaining=site.guard.remaining())


def _check_centre_count(site: PartnerSite, count: int, what: str) -> None:
    limit = site.policy.max_candidate_centres
    if count > limit:
        raise ProtocolError(f"{what}: {count} centres; this partner accepts at most {limit} "
                            "(policy 'max_candidate_centres').")


def kmeans(request: KMeansRequest, site: PartnerSite, mask: MaskRequest | None = None
           ) -> KMeansReply | SecaggMasked:
    """Noised per-centre sums and counts of the partner's customers.

    With ``mask`` (``noise = 'secagg'``) the partner adds only its noise share and replies
    with the masked vector (:func:`fedprofile.client.secure.masked_release`).
    """
    site.check_contract(request.spec_fingerprint)
    if request.centers.shape[1] != site.spec.dim:
        raise ProtocolError(f"train.kmeans request: centres have {request.centers.shape[1]} "
                            f"coordinates; the contract has {site.spec.dim}.")
    _check_centre_count(site, request.centers.shape[0], "train.kmeans request")
    sum_mech = GaussianMechanism(sensitivity=site.spec.norm_bound,
                                 noise_multiplier=request.sum_noise_multiplier)
    count_mech = GaussianMechanism(sensitivity=1.0,
                                   noise_multiplier=request.count_noise_multiplier)
    events = (sum_mech.event(component="sums", stage=request.stage, round=request.round),
              count_mech.event(component="counts", stage=request.stage, round=request.round))
    sums, counts = cluster_partials(site.matrix(), request.centers)
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
    """The policy stage of a Gram release: follows from the target's kind in the contract."""
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
    bound = design_norm_bound(site.spec, task.target,
                              segment_aware=bool(task.segment_centers.size))
    gram_mech = GaussianMechanism(sensitivity=bound**2,
                                  noise_multiplier=request.gram_noise_multiplier)
    events = [gram_mech.event(component="gram", stage=stage, round=task.round)]
    target_mech = None
    if request.with_target:
        target_mech = GaussianMechanism(
            sensitivity=bound * target_bound(site.spec, task.target),
            noise_multiplier=request.target_noise_multiplier)
        events.append(target_mech.event(component="xty", stage=stage, round=task.round))
    data = site.design(task)
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
    if _response_stage(site, task) != "logistic":
        raise ContractError(f"Logistic regression needs a binary target; {task.target!r} is "
                            "not one in the contract.")
    segments = task.segment_centers.shape[0] if task.segment_centers.size else 0
    columns = len(design_names(site.spec, task.target, segments))
    if len(request.theta) != columns:  # checked before the design is built or anything charged
        raise ProtocolError(f"train.gradient request: theta has {len(request.theta)} values; "
                            f"the design has {columns} columns.")
    mech = GaussianMechanism(sensitivity=request.clip, noise_multiplier=request.noise_multiplier)
    events = (mech.event(component="gradient", stage="logistic", round=task.round),)
    data = site.design(task)
    total = clipped_gradient_sum(data.z_train, data.y_train, request.theta, request.clip)
    rng = site.rng(run_id=task.run_id, stage="logistic", round=task.round,
                   request=np.concatenate([request.theta, [request.clip]]))
    if mask is not None:
        return masked_release(site, mask, run_id=task.run_id, stage="logistic",
                              secure_sum=secure_sum_for(request, norm_bound=0.0, dim=columns),
                              values=[total], events=events, rng=rng)
    site.guard.authorize(run_id=task.run_id, stage="logistic", events=events)
    return GradientReply(gradient=mech.randomise(total, rng), events=events)


def score(request: ScoreRequest, site: PartnerSite) -> ScoreReply:
    """Score every customer locally with the published models; write, send nothing."""
    site.check_contract(request.spec_fingerprint)
    site.guard.check_announced(run_id=request.run_id, stage="score")
    segments = (SegmentModel.from_dict(json.loads(request.segment_model), source="coordinator")
                if request.segment_model else None)
    response = (ResponseModel.from_dict(json.loads(request.response_model),
                                        source="coordinator")
                if request.response_model else None)
    scored = score_customers(site.customers(), response=response, segments=segments,
                             prepared=True, source=site.source_label)
    write_table(scored, site.output_path(f"scores-{request.run_id}.parquet"))
    return ScoreReply()


def error_for(exc: Exception, site: PartnerSite | None, message_type: str = "") -> Error:
    """The error reply's content: what went wrong, never where (no local paths) nor data.

    The full text goes to the partner's own log; an unexpected error is logged as its type,
    message and place, never with a traceback (whose frames could show data values).
    """
    for kind, code in _ERROR_CODES:
        if isinstance(exc, kind):
            hint = f" ({exc.hint})" if isinstance(exc, NotReadyError) and exc.hint else ""
            log.warning("Refused %s: %s%s", message_type, exc, hint)
            reason = redact_local_paths(str(exc), site.local_paths() if site else ())
            return Error(code=code, reason=reason)
    # no traceback: its frames could show customer values; the type, message and place only
    log.error("Unexpected error while handling %s: %s: %s (at %s)", message_type,
              type(exc).__name__, exc, _where(exc))
    return Error(code=ErrorCode.INTERNAL,
                 reason=f"Internal error at the partner ({type(exc).__name__}); details are in "
                        "the partner's own log.")


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback (no local values)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown place"
    return f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"


def checked_step(step: Callable[[Any, PartnerSite], Any], request: Any,
                 site: PartnerSite) -> Any:
    """Run ``step``; a request refused as malformed or out of bounds is noted in the ledger.

    Policy refusals are noted by the guard itself. The note holds the reason only, which
    names request parameters, never the partner's data.
    """
    try:
        return step(request, site)
    except ProtocolError as exc:
        task = getattr(request, "task", request)
        try:
            site.ledger.note(run_id=str(getattr(task, "run_id", "")), party=site.name,
                             kind="refusal", message=str(exc))
        except Exception as note_exc:  # noqa: BLE001 - the refusal is what the coordinator gets
            log.error("Could not note a refusal in the partner's ledger (%s at %s)",
                      type(note_exc).__name__, _where(note_exc))
        raise


def _respond(msg: Message, context: Context, defaults: Mapping[int, Mapping[str, Any]],
             parse: Callable[[RecordDict], Any], step: Callable[[Any, PartnerSite], Any]
             ) -> Message:
    site = None
    try:
        site = PartnerSite.from_node_config(context.node_config, defaults,
                                            context.run_config)
        reply = checked_step(step, parse(msg.content), site)
        return Message(reply.to_record(), reply_to=msg)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a clean error reply
        return Message(error_for(exc, site, msg.metadata.message_type), reply_to=msg)


def _secagg_handler(defaults: Mapping[int, Mapping[str, Any]], kind: type,
                    step: Callable[[Any, PartnerSite], Any]
                    ) -> Callable[[Message, Context], Message]:
    def handle(msg: Message, context: Context) -> Message:
        return _respond(msg, context, defaults, partial(decode, kind),
                        lambda request, site: Reply(step(request, site)))
    return handle


def build_client_app(node_defaults: Mapping[int, Mapping[str, Any]] | None = None) -> ClientApp:
    """Build the partner ClientApp.

    Parameters
    ----------
    node_defaults : mapping of int to mapping, optional
        Per-partition node config used in simulation, where Flower only sets
        ``partition-id``; in deployment each SuperNode's ``--node-config`` is used as is.
    """
    defaults = dict(node_defaults or {})
    client = ClientApp(mods=[make_capture_mod(defaults)])

    @client.query("profile")
    def _profile(msg: Message, context: Context) -> Message:
        return _respond(msg, context, defaults, ProfileRequest.from_record, profile)

    @client.train("kmeans")
    def _kmeans(msg: Message, context: Context) -> Message:
        return _respond(msg, context, defaults, Masked.parser(KMeansRequest),
                        lambda r, site: kmeans(r.request, site, r.mask))

    for kind, parse, step in (("secagg_keys", SecaggSetup, secagg_keys),
                              ("secagg_shares", KeyBroadcast, secagg_shares),
                              ("secagg_unmask", UnmaskRequest, secagg_unmask)):
        client.query(kind)(_secagg_handler(defaults, parse, step))

    @client.train("gram")
    def _gram(msg: Message, context: Context) -> Message:
        return _respond(msg, context, defaults, Masked.parser(GramRequest),
                        lambda r, site: gram(r.request, site, r.mask))

    @client.query("score")
    def _score(msg: Message, context: Context) -> Message:
        return _respond(msg, context, defaults, ScoreRequest.from_record, score)

    @client.train("gradient")
    def _gradient(msg: Message, context: Context) -> Message:
        return _respond(msg, context, defaults, Masked.parser(GradientRequest),
                        lambda r, site: gradient(r.request, site, r.mask))

    return client


app = build_client_app()
