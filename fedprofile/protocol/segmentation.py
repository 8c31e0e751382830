"""Segmentation messages: the run announcement (``query.profile``) and ``train.kmeans``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedprofile.contract.lookalike import SeedAudience
from fedprofile.errors import ProtocolError
from fedprofile.privacy.events import PrivacyEvent
from fedprofile.protocol.codec import (
    _ARRAYS,
    _CONFIG,
    _VERSION,
    PROTOCOL_VERSION,
    MessageKind,
    _array,
    _config,
    _events_from_json,
    _events_json,
    _float,
    _get,
    _reply_record,
    _run_id,
)
from fedprofile.protocol.lookalike import seed_config, seed_from

__all__ = ["KMeansReply", "KMeansRequest", "ProfileReply", "ProfileRequest"]


@dataclass(frozen=True)
class ProfileRequest:
    """``query.profile``: the coordinator announces a run and its full privacy plan.

    Each partner checks the plan against its own policy before any data-dependent release,
    and checks its data against the run (``k``, the fewest segments it may publish; the
    response ``target``) so that a run that cannot finish spends nothing. ``k`` is 0 and
    ``target`` "" when unused; ``seed`` names a lookalike run's seed audience, which its
    owner checks (it exists and is large enough) before accepting. ``noise`` is where the
    noise is added (``partner`` or ``secagg``); under ``secagg`` the run introduces
    ``partners`` partners of which up to ``secagg_dropouts`` may drop out, so a partner whose
    policy refuses that secure aggregation says so before anything is spent.
    """

    run_id: str
    spec_fingerprint: str
    epsilon_target: float
    delta: float
    stages: tuple[str, ...]
    planned_events: tuple[PrivacyEvent, ...]
    min_segment_size: int
    k: int = 0
    target: str = ""
    seed: SeedAudience | None = None
    noise: str = "partner"
    partners: int = 0
    secagg_dropouts: int = 0

    message_type: ClassVar[str] = MessageKind.PROFILE

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return RecordDict({_CONFIG: ConfigRecord({
            _VERSION: PROTOCOL_VERSION, "run-id": self.run_id,
            "spec-fingerprint": self.spec_fingerprint, "epsilon-target": self.epsilon_target,
            "delta": self.delta, "stages": list(self.stages),
            "planned-events": _events_json(self.planned_events),
            "min-segment-size": self.min_segment_size, "num-segments": self.k,
            "target": self.target, "noise": self.noise, "run-partners": self.partners,
            "secagg-dropouts": self.secagg_dropouts, **seed_config(self.seed)})})

    @classmethod
    def from_record(cls, content: RecordDict) -> ProfileRequest:
        """Decode and validate."""
        m = "query.profile request"
        c = _config(content, m)
        stages = _get(c, "stages", list, m)
        noise = _get(c, "noise", str, m)
        if noise not in ("partner", "secagg"):
            raise ProtocolError(f"{m}: 'noise' must be 'partner' or 'secagg'; got {noise!r}.")
        partners, dropouts = _get(c, "run-partners", int, m), _get(c, "secagg-dropouts", int, m)
        if partners < 0 or dropouts < 0:
            raise ProtocolError(f"{m}: 'run-partners' and 'secagg-dropouts' must be >= 0; got "
                                f"{partners} and {dropouts}.")
        return cls(run_id=_run_id(c, m),
                   spec_fingerprint=_get(c, "spec-fingerprint", str, m),
                   epsilon_target=_float(c, "epsilon-target", m, allow_inf=True),
                   delta=_float(c, "delta", m), stages=tuple(str(s) for s in stages),
                   planned_events=_events_from_json(_get(c, "planned-events", str, m), m),
                   min_segment_size=int(_get(c, "min-segment-size", int, m)),
                   k=int(_get(c, "num-segments", int, m)), target=_get(c, "target", str, m),
                   seed=seed_from(c, m), noise=noise, partners=int(partners),
                   secagg_dropouts=int(dropouts))


@dataclass(frozen=True)
class ProfileReply:
    """A partner's answer to ``query.profile``: who it is and the public limits it enforces.

    Nothing here depends on the partner's customers.
    """

    partner: str
    spec_fingerprint: str
    key_id: str
    max_epsilon_per_run: float
    epsilon_remaining: float

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return RecordDict({_CONFIG: ConfigRecord({
            _VERSION: PROTOCOL_VERSION, "partner": self.partner,
            "spec-fingerprint": self.spec_fingerprint, "key-id": self.key_id,
            "max-epsilon-per-run": self.max_epsilon_per_run,
            "epsilon-remaining": self.epsilon_remaining})})

    @classmethod
    def from_record(cls, content: RecordDict) -> ProfileReply:
        """Decode and validate."""
        m = "query.profile reply"
        c = _config(content, m)
        return cls(partner=_get(c, "partner", str, m),
                   spec_fingerprint=_get(c, "spec-fingerprint", str, m),
                   key_id=_get(c, "key-id", str, m),
                   max_epsilon_per_run=_float(c, "max-epsilon-per-run", m, allow_inf=True),
                   epsilon_remaining=_float(c, "epsilon-remaining", m, allow_inf=True))


@dataclass(frozen=True)
class KMeansRequest:
    """``train.kmeans``: assign customers to ``centers`` and release noised sums and counts.

    ``sum_noise_multiplier`` and ``count_noise_multiplier`` are ``sigma / sensitivity``. With
    ``radius`` 0 the sums are of the customers' vectors (sensitivity: the contract's
    ``norm_bound``, which the partner takes from its own contract); with ``radius`` > 0 they
    are of each customer's displacement from its centre, shortened to at most ``radius``
    (sensitivity ``radius``). Counts have sensitivity 1.
    """

    run_id: str
    spec_fingerprint: str
    stage: str
    round: int
    centers: np.ndarray
    sum_noise_multiplier: float
    count_noise_multiplier: float
    radius: float = 0.0

    message_type: ClassVar[str] = MessageKind.KMEANS

    def sums_sensitivity(self, norm_bound: float) -> float:
        """L2 sensitivity of the requested sums: ``radius``, or ``norm_bound`` when it is 0."""
        return self.radius or norm_bound

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return RecordDict({
            _ARRAYS: ArrayRecord({"centers": Array(np.asarray(self.centers, dtype=float))}),
            _CONFIG: ConfigRecord({
                _VERSION: PROTOCOL_VERSION, "run-id": self.run_id,
                "spec-fingerprint": self.spec_fingerprint, "stage": self.stage,
                "round": self.round, "sum-noise-multiplier": self.sum_noise_multiplier,
                "count-noise-multiplier": self.count_noise_multiplier,
                "radius": float(self.radius)})})

    @classmethod
    def from_record(cls, content: RecordDict) -> KMeansRequest:
        """Decode and validate (centres must be a finite 2-D array)."""
        m = "train.kmeans request"
        c = _config(content, m)
        centers = _array(content, "centers", m)
        if centers.ndim != 2 or centers.shape[0] < 1:
            raise ProtocolError(f"{m}: 'centers' must be a non-empty 2-D array.")
        return cls(run_id=_run_id(c, m),
                   spec_fingerprint=_get(c, "spec-fingerprint", str, m),
                   stage=_get(c, "stage", str, m), round=int(_get(c, "round", int, m)),
                   centers=centers,
                   sum_noise_multiplier=_float(c, "sum-noise-multiplier", m),
                   count_noise_multiplier=_float(c, "count-noise-multiplier", m),
                   radius=_float(c, "radius", m))


@dataclass(frozen=True)
class KMeansReply:
    """A partner's noised per-cluster sums (k x d) and counts (k) with their ledger events."""

    sums: np.ndarray
    counts: np.ndarray
    events: tuple[PrivacyEvent, ...]

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return _reply_record({"sums": self.sums, "counts": self.counts}, self.events)

    @classmethod
    def from_record(cls, content: RecordDict, *, shape: tuple[int, int] | None = None
                    ) -> KMeansReply:
        """Decode and validate; ``shape`` is the expected ``(k, d)`` of the sums."""
        m = "train.kmeans reply"
        c = _config(content, m)
        sums, counts = _array(content, "sums", m), _array(content, "counts", m)
        if shape is not None and (sums.shape != shape or counts.shape != (shape[0],)):
            raise ProtocolError(f"{m}: expected sums of shape {shape} and counts of shape "
                                f"({shape[0]},), got {sums.shape} and {counts.shape}.")
        return cls(sums=sums, counts=counts,
                   events=_events_from_json(_get(c, "events", str, m), m))
