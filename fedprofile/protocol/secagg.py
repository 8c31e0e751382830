"""Secure-aggregation messages on the wire, and the public plan of one secure sum.

The protocol (:mod:`fedprofile.privacy.secagg.messages`) runs over Flower messages:

- ``query.secagg_keys`` (:class:`SecaggSetup`) -> :class:`~.messages.KeyAdvert`, once per stage;
- ``query.secagg_agree`` (:class:`~.messages.KeyBroadcast`) -> :class:`~.messages.KeysAgreed`;
- the stage's own request (``train.kmeans``, ``train.gram``, ``train.gradient``) with one
  more record, :class:`~.messages.MaskRequest` -> :class:`SecaggMasked` (masked vector and the
  partner's ledger events);
- after a dropout only, ``query.secagg_confirm`` (:class:`~.messages.ConfirmRequest`) ->
  :class:`~.messages.Confirmation`;
- ``query.secagg_unmask`` (:class:`~.messages.UnmaskRequest`) -> :class:`~.messages.UnmaskReply`.

:class:`SecureSum` names the statistics of one release and their sensitivities and noise
multipliers; both sides derive the same :class:`~fedprofile.privacy.secagg.plan.SecaggPlan`
for each from it, so the quantisation and noise shares are never taken on trust.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from fedprofile.errors import ProtocolError
from fedprofile.privacy.events import PrivacyEvent
from fedprofile.privacy.secagg.messages import (
    Confirmation,
    ConfirmRequest,
    KeyAdvert,
    KeyBroadcast,
    KeysAgreed,
    MaskedInput,
    MaskRequest,
    SetupRequest,
    UnmaskReply,
    UnmaskRequest,
)
from fedprofile.privacy.secagg.plan import SecaggPlan, plan_secagg
from fedprofile.privacy.secagg.quantize import MAX_BITS
from fedprofile.protocol.codec import (
    _CONFIG,
    _VERSION,
    MAX_ARRAY_ELEMENTS,
    PROTOCOL_VERSION,
    _config,
    _events_from_json,
    _events_json,
    _get,
    _run_id,
)
from fedprofile.protocol.response import GradientRequest, GramRequest
from fedprofile.protocol.segmentation import KMeansRequest

__all__ = [
    "MAX_PARTNER_CUSTOMERS",
    "RING_BITS",
    "SECAGG_AGREE",
    "SECAGG_CONFIRM",
    "SECAGG_KEYS",
    "SECAGG_UNMASK",
    "SecaggMasked",
    "SecaggSetup",
    "SecureSum",
    "decode",
    "encode",
    "mask_request",
    "secure_sum_for",
    "with_mask_request",
]

SECAGG_KEYS, SECAGG_AGREE, SECAGG_CONFIRM, SECAGG_UNMASK = (
    "query.secagg_keys", "query.secagg_agree", "query.secagg_confirm", "query.secagg_unmask")
RING_BITS = MAX_BITS
"""Every secure sum of a run uses one ring, ``2**62``; each statistic's plan fits in it."""
MAX_PARTNER_CUSTOMERS = 10**8
"""Public bound on one partner's customers: it sizes the ring (no sum ever wraps)."""
_MASK = "secagg"


@dataclass(frozen=True)
class SecureSum:
    """The statistics one secure sum releases: ``(name, size, sensitivity, noise multiplier)``.

    ``noise multiplier`` 0 is an exact (non-private) sum. :meth:`plans` gives every
    statistic's plan for ``partners`` partners of whom ``dropouts`` may drop out or collude.
    """

    parts: tuple[tuple[str, int, float, float], ...]

    def plans(self, partners: int, dropouts: int) -> list[SecaggPlan]:
        """One plan per statistic, on the run's ring (:data:`RING_BITS`)."""
        return [plan_secagg(partners=partners, dropouts=dropouts, dim=max(size, 1),
                            bound=MAX_PARTNER_CUSTOMERS * sens, sensitivity=sens,
                            mu=1.0 / z if z > 0 else math.inf).on_ring(RING_BITS)
                for _, size, sens, z in self.parts]

    @property
    def dim(self) -> int:
        """Length of the masked vector (every statistic, flattened, at least one value each)."""
        return sum(max(size, 1) for _, size, _, _ in self.parts)

    def encode(self, plans: list[SecaggPlan], values: list[np.ndarray], dim: int,
               rng: np.random.Generator) -> np.ndarray:
        """Quantise, add this partner's noise shares, concatenate, pad with zeros to ``dim``."""
        out = [plan.encode(np.ravel(v) if np.size(v) else np.zeros(1), rng)
               for plan, v in zip(plans, values, strict=True)]
        flat = np.concatenate(out)
        if flat.size > dim:
            raise ProtocolError(f"A secure sum of {flat.size} values does not fit the round's "
                                f"masked vectors of {dim}.")
        return np.concatenate([flat, np.zeros(dim - flat.size, dtype=np.uint64)])

    def decode(self, plans: list[SecaggPlan], total: np.ndarray) -> list[np.ndarray]:
        """Split the unmasked modular sum back into real statistics (flat)."""
        out, at = [], 0
        for plan, (_, size, _, _) in zip(plans, self.parts, strict=True):
            width = max(size, 1)
            out.append(plan.quantization.decode_sum(total[at:at + width])[:size])
            at += width
        return out


def secure_sum_for(request: object, *, norm_bound: float, target_bound: float = 0.0,
                   dim: int = 0) -> SecureSum:
    """The statistics a stage request releases under secagg (both sides derive it).

    ``norm_bound`` is the contract's norm bound (k-means sums of vectors; displacement sums
    take the request's ``radius``) or the design's (Gram); ``target_bound`` the target's
    bound and ``dim`` the design's columns (response models).
    """
    if isinstance(request, KMeansRequest):
        k, d = request.centers.shape
        return SecureSum((("sums", k * d, request.sums_sensitivity(norm_bound),
                           request.sum_noise_multiplier),
                          ("counts", k, 1.0, request.count_noise_multiplier)))
    if isinstance(request, GramRequest):
        target = request.with_target
        return SecureSum((("gram", dim * (dim + 1) // 2, norm_bound**2,
                           request.gram_noise_multiplier),
                          ("xty", dim if target else 0, norm_bound * max(target_bound, 1e-300),
                           request.target_noise_multiplier if target else 0.0)))
    if isinstance(request, GradientRequest):
        return SecureSum((("gradient", dim, request.clip, request.noise_multiplier),))
    raise TypeError(f"No secure sum for {type(request).__name__}.")


def _bytes(config: ConfigRecord, key: str, message: str, size: int | None = None) -> bytes:
    value = _get(config, key, bytes, message)
    if size is not None and len(value) != size:
        raise ProtocolError(f"{message}: field {key!r} must be {size} bytes.")
    return value


def _str_list(config: ConfigRecord, key: str, message: str) -> tuple[str, ...]:
    value = _get(config, key, list, message)
    if not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"{message}: field {key!r} must be a list of strings.")
    return tuple(value)


def _bytes_list(config: ConfigRecord, key: str, message: str, n: int) -> list[bytes]:
    value = _get(config, key, list, message) if n else []
    if len(value) != n or not all(isinstance(v, bytes) for v in value):
        raise ProtocolError(f"{message}: field {key!r} must be a list of {n} byte strings.")
    return list(value)


def _mapping(config: ConfigRecord, prefix: str, message: str) -> dict[str, bytes]:
    ids = _str_list(config, f"{prefix}-ids", message)
    return dict(zip(ids, _bytes_list(config, f"{prefix}-values", message, len(ids)),
                    strict=True))


def _flat(mapping: dict[str, bytes], prefix: str) -> dict[str, list[str] | list[bytes]]:
    return {f"{prefix}-ids": list(mapping), f"{prefix}-values": list(mapping.values())}


def _uint_vector(data: bytes, message: str) -> np.ndarray:
    if len(data) % 8 or len(data) // 8 > MAX_ARRAY_ELEMENTS:
        raise ProtocolError(f"{message}: the masked vector must be at most "
                            f"{MAX_ARRAY_ELEMENTS} little-endian uint64 values.")
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


@dataclass(frozen=True)
class SecaggSetup:
    """``query.secagg_keys``: open a secure-aggregation run for one stage of a fedprofile run.

    ``partners`` (``m``) and ``dropouts`` (``t``) are the public plan each partner checks
    against its policy; ``request`` is the protocol's own setup.
    """

    run_id: str
    stage: str
    partners: int
    dropouts: int
    request: SetupRequest

    message_type: ClassVar[str] = SECAGG_KEYS


def encode(obj: object) -> RecordDict:
    """The record of any secure-aggregation message."""
    head: dict = {_VERSION: PROTOCOL_VERSION}
    if isinstance(obj, SecaggSetup):
        r = obj.request
        head |= {"run-id": obj.run_id, "stage": obj.stage, "plan-partners": obj.partners,
                 "plan-dropouts": obj.dropouts, "secagg-id": r.run_id, "roster": list(r.roster),
                 "threshold": r.threshold, "bits": r.bits, "dim": r.dim,
                 "min-survivors": r.min_survivors}
    elif isinstance(obj, KeyAdvert):
        head |= {"partner": obj.partner_id, "mask-key": obj.mask_key, "enc-key": obj.enc_key,
                 "signature": obj.signature}
    elif isinstance(obj, KeyBroadcast):
        a = obj.adverts
        head |= {"secagg-id": obj.run_id, "ids": [x.partner_id for x in a],
                 "mask-keys": [x.mask_key for x in a], "enc-keys": [x.enc_key for x in a],
                 "signatures": [x.signature for x in a]}
    elif isinstance(obj, KeysAgreed):
        head |= {"partner": obj.partner_id}
    elif isinstance(obj, ConfirmRequest):
        head |= {"secagg-id": obj.run_id, "round": obj.round,
                 "survivors": list(obj.survivors), "dropped-partners": list(obj.dropped)}
    elif isinstance(obj, Confirmation):
        head |= {"partner": obj.partner_id, "round": obj.round, "signature": obj.signature}
    elif isinstance(obj, UnmaskRequest):
        head |= {"secagg-id": obj.run_id, "round": obj.round,
                 "survivors": list(obj.survivors), "dropped-partners": list(obj.dropped),
                 **_flat(obj.seed_shares, "seed"), **_flat(obj.signatures, "signature")}
    elif isinstance(obj, UnmaskReply):
        head |= {"partner": obj.partner_id, "round": obj.round,
                 **_flat(obj.seed_shares, "seed"), **_flat(obj.pair_keys, "pair-key")}
    elif isinstance(obj, SecaggMasked):
        m = obj.masked
        head |= {"partner": m.partner_id, "round": m.round,
                 "masked": np.asarray(m.masked, dtype="<u8").tobytes(),
                 "commitment": m.seed_commitment, **_flat(m.seed_shares, "seed"),
                 "events": _events_json(obj.events)}
    else:
        raise TypeError(f"No secure-aggregation record for {type(obj).__name__}.")
    return RecordDict({_CONFIG: ConfigRecord(head)})


def decode(kind: type, content: RecordDict) -> object:
    """Decode and check the record of a ``kind`` message (one of :func:`encode`'s types)."""
    m = f"secure aggregation {kind.__name__}"
    c = _config(content, m)
    if kind is SecaggSetup:
        setup = SetupRequest(_bytes(c, "secagg-id", m, 16), _str_list(c, "roster", m),
                             *(int(_get(c, k, int, m)) for k in ("threshold", "bits", "dim",
                                                                 "min-survivors")))
        if not 1 <= setup.dim <= MAX_ARRAY_ELEMENTS:
            raise ProtocolError(f"{m}: 'dim' must be in [1, {MAX_ARRAY_ELEMENTS}].")
        return SecaggSetup(_run_id(c, m), _get(c, "stage", str, m),
                           int(_get(c, "plan-partners", int, m)),
                           int(_get(c, "plan-dropouts", int, m)), setup)
    if kind is KeyAdvert:
        return KeyAdvert(_get(c, "partner", str, m), _bytes(c, "mask-key", m, 32),
                         _bytes(c, "enc-key", m, 32), _bytes(c, "signature", m, 64))
    if kind is KeyBroadcast:
        ids = _str_list(c, "ids", m)
        cols = [_bytes_list(c, k, m, len(ids)) for k in ("mask-keys", "enc-keys", "signatures")]
        return KeyBroadcast(_bytes(c, "secagg-id", m, 16),
                            tuple(KeyAdvert(i, *x) for i, *x in zip(ids, *cols, strict=True)))
    if kind is KeysAgreed:
        return KeysAgreed(_get(c, "partner", str, m))
    if kind is ConfirmRequest:
        return ConfirmRequest(_bytes(c, "secagg-id", m, 16), int(_get(c, "round", int, m)),
                              _str_list(c, "survivors", m), _str_list(c, "dropped-partners", m))
    if kind is Confirmation:
        return Confirmation(_get(c, "partner", str, m), int(_get(c, "round", int, m)),
                            _bytes(c, "signature", m, 64))
    if kind is UnmaskRequest:
        return UnmaskRequest(_bytes(c, "secagg-id", m, 16), int(_get(c, "round", int, m)),
                             _str_list(c, "survivors", m), _str_list(c, "dropped-partners", m),
                             _mapping(c, "seed", m), _mapping(c, "signature", m))
    if kind is UnmaskReply:
        return UnmaskReply(_get(c, "partner", str, m), int(_get(c, "round", int, m)),
                           _mapping(c, "seed", m), _mapping(c, "pair-key", m))
    if kind is SecaggMasked:
        masked = MaskedInput(_get(c, "partner", str, m), int(_get(c, "round", int, m)),
                             _uint_vector(_bytes(c, "masked", m), m), _mapping(c, "seed", m),
                             _bytes(c, "commitment", m))
        return SecaggMasked(masked, _events_from_json(_get(c, "events", str, m), m))
    raise TypeError(f"No secure-aggregation record for {kind.__name__}.")


@dataclass(frozen=True)
class SecaggMasked:
    """A partner's reply to a stage request under secagg: masked vector and ledger events."""

    masked: MaskedInput
    events: tuple[PrivacyEvent, ...]

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return encode(self)


def with_mask_request(content: RecordDict, request: MaskRequest) -> RecordDict:
    """A stage request's record with the round's :class:`MaskRequest` added."""
    out = content.copy()
    out[_MASK] = ConfigRecord({
        "secagg-id": request.run_id, "round": request.round, "dim": request.dim,
        "participants": list(request.participants)})
    return out


def mask_request(content: RecordDict) -> MaskRequest | None:
    """The :class:`MaskRequest` of a stage request, or None under partner noise."""
    record = content.get(_MASK)
    if record is None:
        return None
    m = "secure aggregation mask request"
    if not isinstance(record, ConfigRecord):
        raise ProtocolError(f"{m}: record {_MASK!r} must be a ConfigRecord.")
    return MaskRequest(_bytes(record, "secagg-id", m, 16), int(_get(record, "round", int, m)),
                       _str_list(record, "participants", m), int(_get(record, "dim", int, m)))
