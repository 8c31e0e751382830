"""The overlap (PSI cardinality) messages: blinded curve points relayed by the coordinator.

Three steps per pair, initiator A and responder B:

1. ``query.overlap_blind`` to A: A blinds its set with a fresh key and replies ``E_a(X)``.
2. ``query.overlap_respond`` to B with ``E_a(X)``: B records its share of the release,
   replies ``E_b(E_a(X))`` and ``E_b(Y)``, both shuffled, with a fresh key.
3. ``query.overlap_count`` to A with both: A counts ``E_b(E_a(X)) ∩ E_a(E_b(Y))``, records
   its share, adds discrete Gaussian noise and replies the noisy count (or "count-suppressed").

Each set is padded with dummy points to a public size bucket (within 25 % of its size), and
the replies of steps 2 and 3 also carry the partner's noisy customer count (one release
per run). The
coordinator only ever sees uniformly random-looking 32-byte points, the padded sizes, the
noisy customer counts and the noisy overlap count.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedprofile.errors import ProtocolError
from fedprofile.privacy.events import PrivacyEvent
from fedprofile.protocol.codec import (
    _ARRAYS,
    _CONFIG,
    _HEADER_BYTES,
    _NUMPY_STYPE,
    _VERSION,
    PROTOCOL_VERSION,
    MessageKind,
    _config,
    _events_from_json,
    _events_json,
    _float,
    _get,
    _npy_header,
    _run_id,
)

__all__ = ["MAX_OVERLAP_SIGMA", "MAX_SET_POINTS", "OverlapBlindReply", "OverlapCountReply",
           "OverlapQuery", "OverlapRespondReply", "OverlapStep"]

_POINT = 32


MAX_SET_POINTS = 1 << 21
"""Most points one overlap set may hold (2,097,152 customers: 64 MiB)."""
MAX_OVERLAP_SIGMA = 1e6
"""Largest noise standard deviation of one overlap count (far above any set's size)."""


def _points(content: RecordDict, key: str, message: str) -> np.ndarray:
    """A received set of points, bounded by its bytes and header before it is decoded."""
    arrays = content.get(_ARRAYS)
    if not isinstance(arrays, ArrayRecord) or key not in arrays:
        raise ProtocolError(f"{message}: missing array {key!r}.")
    array = arrays[key]
    limit = MAX_SET_POINTS * _POINT
    if array.stype != _NUMPY_STYPE or len(array.data) > limit + _HEADER_BYTES:
        raise ProtocolError(f"{message}: array {key!r} must be a NumPy array of at most "
                            f"{MAX_SET_POINTS} points.")
    shape, dtype = _npy_header(array.data, key, message, limit=limit)
    if dtype != np.uint8 or len(shape) != 2 or shape[1] != _POINT:
        raise ProtocolError(f"{message}: array {key!r} must be rows of {_POINT} bytes.")
    return np.load(io.BytesIO(array.data), allow_pickle=False)


def _with_points(config: dict[str, Any], points: dict[str, np.ndarray]) -> RecordDict:
    record = RecordDict({_CONFIG: ConfigRecord({_VERSION: PROTOCOL_VERSION, **config})})
    if points:
        record[_ARRAYS] = ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.uint8))
                                       for k, v in points.items()})
    return record


@dataclass(frozen=True)
class OverlapQuery:
    """What every step of one query carries: the run, the query, the counterpart, the noise."""

    run_id: str
    spec_fingerprint: str
    query_id: str
    counterpart: str
    noise_multiplier: float
    """Standard deviation of the count's noise (sensitivity 1); 0 is non-private."""

    def config(self) -> dict[str, Any]:
        """The query's fields as config entries."""
        return {"run-id": self.run_id, "spec-fingerprint": self.spec_fingerprint,
                "query-id": self.query_id, "counterpart": self.counterpart,
                "noise-multiplier": self.noise_multiplier}

    @classmethod
    def from_config(cls, config: ConfigRecord, message: str) -> OverlapQuery:
        """Decode and validate the query's fields."""
        query_id = _get(config, "query-id", str, message)
        if not query_id.isalnum() or len(query_id) > 64:
            raise ProtocolError(f"{message}: field 'query-id' must be 1 to 64 letters or "
                                "digits.")
        sigma = _float(config, "noise-multiplier", message)
        if sigma > MAX_OVERLAP_SIGMA:
            raise ProtocolError(f"{message}: field 'noise-multiplier' must be at most "
                                f"{MAX_OVERLAP_SIGMA:g} (the noise of one count).")
        return cls(run_id=_run_id(config, message),
                   spec_fingerprint=_get(config, "spec-fingerprint", str, message),
                   query_id=query_id, counterpart=_get(config, "counterpart", str, message),
                   noise_multiplier=sigma)


@dataclass(frozen=True)
class OverlapStep:
    """A request of any of the three steps: the query and the points relayed to it.

    ``blinded`` is ``E_a(X)`` (step 2) or ``E_b(E_a(X))`` (step 3); ``counterpart_points``
    is ``E_b(Y)`` (step 3); ``min_overlap_size`` is the counterpart's limit (step 3).
    """

    message_type: str
    query: OverlapQuery
    blinded: np.ndarray | None = None
    counterpart_points: np.ndarray | None = None
    min_overlap_size: int = 0

    _KINDS: ClassVar[tuple[str, ...]] = (MessageKind.OVERLAP_BLIND, MessageKind.OVERLAP_RESPOND,
                                         MessageKind.OVERLAP_COUNT)

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        points = {k: v for k, v in (("blinded-points", self.blinded),
                                    ("counterpart-points", self.counterpart_points))
                  if v is not None}
        return _with_points({**self.query.config(), "min-overlap-size": self.min_overlap_size},
                            points)

    @classmethod
    def from_record(cls, content: RecordDict, message_type: str) -> OverlapStep:
        """Decode and validate a request of ``message_type``."""
        if message_type not in cls._KINDS:
            raise ProtocolError(f"{message_type!r} is not an overlap step.")
        m = f"{message_type} request"
        c = _config(content, m)
        step = cls._KINDS.index(message_type)
        return cls(message_type=message_type, query=OverlapQuery.from_config(c, m),
                   blinded=_points(content, "blinded-points", m) if step >= 1 else None,
                   counterpart_points=(_points(content, "counterpart-points", m)
                                       if step == 2 else None),
                   min_overlap_size=int(_get(c, "min-overlap-size", int, m)))


@dataclass(frozen=True)
class OverlapBlindReply:
    """Step 1 reply: ``E_a(X)`` (padded, shuffled) and the initiator's published minimum."""

    blinded: np.ndarray
    min_overlap_size: int

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return _with_points({"min-overlap-size": self.min_overlap_size},
                            {"blinded-points": self.blinded})

    @classmethod
    def from_record(cls, content: RecordDict) -> OverlapBlindReply:
        """Decode and validate."""
        m = "query.overlap_blind reply"
        c = _config(content, m)
        return cls(blinded=_points(content, "blinded-points", m),
                   min_overlap_size=int(_get(c, "min-overlap-size", int, m)))


@dataclass(frozen=True)
class OverlapRespondReply:
    """Step 2 reply: ``E_b(E_a(X))`` and ``E_b(Y)`` (padded), each shuffled.

    With B's noisy customer count and B's ledger events.
    """

    double: np.ndarray
    own: np.ndarray
    min_overlap_size: int
    noisy_customers: int
    events: tuple[PrivacyEvent, ...]

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return _with_points({"min-overlap-size": self.min_overlap_size,
                             "noisy-customers": self.noisy_customers,
                             "events": _events_json(self.events)},
                            {"double-blinded": self.double, "own-blinded": self.own})

    @classmethod
    def from_record(cls, content: RecordDict) -> OverlapRespondReply:
        """Decode and validate."""
        m = "query.overlap_respond reply"
        c = _config(content, m)
        return cls(double=_points(content, "double-blinded", m),
                   own=_points(content, "own-blinded", m),
                   min_overlap_size=int(_get(c, "min-overlap-size", int, m)),
                   noisy_customers=int(_get(c, "noisy-customers", int, m)),
                   events=_events_from_json(_get(c, "events", str, m), m))


@dataclass(frozen=True)
class OverlapCountReply:
    """Step 3 reply: the noisy count, or ``suppressed`` (then the count is 0 and unused).

    With A's noisy customer count and A's ledger events.
    """

    count: int
    suppressed: bool
    floor: int
    """The published minimum A applied: the stricter of its own and the relayed one."""
    noisy_customers: int
    events: tuple[PrivacyEvent, ...]

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return _with_points({"noisy-count": self.count, "count-suppressed": self.suppressed,
                             "applied-min-overlap-size": self.floor,
                             "noisy-customers": self.noisy_customers,
                             "events": _events_json(self.events)}, {})

    @classmethod
    def from_record(cls, content: RecordDict) -> OverlapCountReply:
        """Decode and validate."""
        m = "query.overlap_count reply"
        c = _config(content, m)
        return cls(count=int(_get(c, "noisy-count", int, m)),
                   suppressed=bool(_get(c, "count-suppressed", bool, m)),
                   floor=int(_get(c, "applied-min-overlap-size", int, m)),
                   noisy_customers=int(_get(c, "noisy-customers", int, m)),
                   events=_events_from_json(_get(c, "events", str, m), m))
