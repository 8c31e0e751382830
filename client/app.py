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

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from fedprofile.client.capture import make_capture_mod
from fedprofile.client.checks import NotReadyError, check_ready
from fedprofile.client.lookalike import (
    check_seed,
    lookalike_select,
)
from fedprofile.client.overlap import overlap_blind, overlap_count, overlap_respond
from fedprofile.client.redact import redact_local_paths
from fedprofile.client.releases import gradient, gram, kmeans
from fedprofile.client.secure import (
    Masked,
    Reply,
    as_skellam,
    check_secure_aggregation,
    secagg_agree,
    secagg_confirm,
    secagg_keys,
    secagg_unmask,
)
from fedprofile.client.site import PartnerSite
from fedprofile.errors import (
    BudgetExceededError,
    ContractError,
    DataError,
    PolicyRefusedError,
    ProtocolError,
    SecureAggregationRefusedError,
)
from fedprofile.io.tables import write_table
from fedprofile.models.response_model import ResponseModel
from fedprofile.models.scoring import score_customers
from fedprofile.models.segment_model import SegmentModel
from fedprofile.privacy.secagg.messages import ConfirmRequest, KeyBroadcast, UnmaskRequest
from fedprofile.protocol import (
    ErrorCode,
    GradientRequest,
    GramRequest,
    KMeansRequest,
    LookalikeRequest,
    MessageKind,
    ProfileReply,
    ProfileRequest,
    ScoreReply,
    ScoreRequest,
)
from fedprofile.protocol.overlap import OverlapStep
from fedprofile.protocol.secagg import SecaggSetup, decode

__all__ = ["app", "build_client_app", "checked_step", "error_for", "gradient", "gram", "kmeans",
           "profile", "score"]

log = logging.getLogger("fedprofile.client")

_ERROR_CODES: tuple[tuple[type[Exception], int], ...] = (
    (SecureAggregationRefusedError, ErrorCode.SECAGG_REFUSED),
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
    if request.seed is not None:
        check_seed(site, request.seed)
    if request.noise == "secagg":
        check_secure_aggregation(site, partners=request.partners,
                                 dropouts=request.secagg_dropouts)
    secure = request.noise == "secagg"
    # a secure run's releases are Skellam ones, accounted in RDP: judge the plan as such
    events = tuple(map(as_skellam, request.planned_events)) if secure else \
        request.planned_events
    site.guard.accept_plan(run_id=request.run_id, stages=request.stages, events=events,
                           delta=request.delta, min_segment_size=request.min_segment_size)
    site.ledger.start_run(run_id=request.run_id, party=site.name,
                          epsilon_target=request.epsilon_target, delta=request.delta)
    return ProfileReply(partner=site.name, spec_fingerprint=site.spec.fingerprint(),
                        key_id=site.key_id,
                        max_epsilon_per_run=site.policy.max_epsilon_per_run,
                        epsilon_remaining=site.guard.remaining(secure=secure))


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


def _overlap_keys(context: Context) -> ConfigRecord:
    """The node's own overlap state between steps (fresh keys, the run's noisy size)."""
    if "overlap-keys" not in context.state:
        context.state["overlap-keys"] = ConfigRecord()
    keys = context.state["overlap-keys"]
    assert isinstance(keys, ConfigRecord)
    return keys


def _overlap_parser(kind: str) -> Callable[[RecordDict], OverlapStep]:
    return lambda content: OverlapStep.from_record(content, kind)


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
                              ("secagg_agree", KeyBroadcast, secagg_agree),
                              ("secagg_confirm", ConfirmRequest, secagg_confirm),
                              ("secagg_unmask", UnmaskRequest, secagg_unmask)):
        client.query(kind)(_secagg_handler(defaults, parse, step))

    @client.train("gram")
    def _gram(msg: Message, context: Context) -> Message:
        return _respond(msg, context, defaults, Masked.parser(GramRequest),
                        lambda r, site: gram(r.request, site, r.mask))

    @client.query("score")
    def _score(msg: Message, context: Context) -> Message:
        return _respond(msg, context, defaults, ScoreRequest.from_record, score)

    @client.query("lookalike")
    def _lookalike(msg: Message, context: Context) -> Message:
        return _respond(msg, context, defaults, LookalikeRequest.from_record, lookalike_select)

    @client.train("gradient")
    def _gradient(msg: Message, context: Context) -> Message:
        return _respond(msg, context, defaults, Masked.parser(GradientRequest),
                        lambda r, site: gradient(r.request, site, r.mask))

    @client.query("overlap_blind")
    def _overlap_blind(msg: Message, context: Context) -> Message:
        keys = _overlap_keys(context)
        return _respond(msg, context, defaults, _overlap_parser(MessageKind.OVERLAP_BLIND),
                        lambda step, site: overlap_blind(step, site, keys))  # type: ignore[arg-type]

    @client.query("overlap_respond")
    def _overlap_respond(msg: Message, context: Context) -> Message:
        store = _overlap_keys(context)
        return _respond(msg, context, defaults, _overlap_parser(MessageKind.OVERLAP_RESPOND),
                        lambda step, site: overlap_respond(step, site, store))  # type: ignore[arg-type]

    @client.query("overlap_count")
    def _overlap_count(msg: Message, context: Context) -> Message:
        keys = _overlap_keys(context)
        return _respond(msg, context, defaults, _overlap_parser(MessageKind.OVERLAP_COUNT),
                        lambda step, site: overlap_count(step, site, keys))  # type: ignore[arg-type]

    return client


app = build_client_app()
