"""Lookalike messages: the seed audience every instruction names, and local selection.

The seed travels as its definition only (owner, column or expression, or "the owner's own
seed file"); its members never leave the seed owner. ``query.lookalike`` has every partner
score its customers with the published lookalike model and write its audience locally; the
reply holds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from flwr.app import ConfigRecord, RecordDict

from fedprofile.contract.lookalike import SeedAudience
from fedprofile.errors import FedprofileError, ProtocolError
from fedprofile.protocol.codec import (
    _CONFIG,
    _VERSION,
    PROTOCOL_VERSION,
    MessageKind,
    _config,
    _float,
    _get,
    _run_id,
)

__all__ = ["LookalikeReply", "LookalikeRequest", "seed_config", "seed_from"]

def seed_config(seed: SeedAudience | None) -> dict[str, Any]:
    """The config fields naming the seed ("" everywhere when the instruction has none)."""
    if seed is None:
        return {"seed-partner": "", "seed-column": "", "seed-expr": "", "seed-file": False}
    return {"seed-partner": seed.partner, "seed-column": seed.column, "seed-expr": seed.expr,
            "seed-file": seed.file}


def seed_from(config: ConfigRecord, message: str) -> SeedAudience | None:
    """The seed an instruction names, or None (every seed field empty)."""
    partner = _get(config, "seed-partner", str, message)
    column = _get(config, "seed-column", str, message)
    expr = _get(config, "seed-expr", str, message)
    file = bool(_get(config, "seed-file", bool, message))
    if not partner:
        if column or expr or file:
            raise ProtocolError(f"{message}: a seed definition without a 'seed-partner'.")
        return None
    try:
        return SeedAudience(partner=partner, column=column, expr=expr, file=file)
    except FedprofileError as exc:
        raise ProtocolError(f"{message}: invalid seed audience: {exc}") from None


@dataclass(frozen=True)
class LookalikeRequest:
    """``query.lookalike``: score every customer with the published model, select locally.

    Each partner keeps its ``size`` best-scored customers (0: no size limit) whose score is
    at least ``threshold`` (0: none), leaving out the seed owner's seed members, and writes
    their pseudonymised ids and scores to its own output folder.
    """

    run_id: str
    spec_fingerprint: str
    model: str
    seed: SeedAudience
    size: int
    threshold: float

    message_type: ClassVar[str] = MessageKind.LOOKALIKE

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return RecordDict({_CONFIG: ConfigRecord({
            _VERSION: PROTOCOL_VERSION, "run-id": self.run_id,
            "spec-fingerprint": self.spec_fingerprint, "lookalike-model": self.model,
            "lookalike-size": self.size, "lookalike-threshold": self.threshold,
            **seed_config(self.seed)})})

    @classmethod
    def from_record(cls, content: RecordDict) -> LookalikeRequest:
        """Decode and validate."""
        m = f"{MessageKind.LOOKALIKE} request"
        c = _config(content, m)
        seed = seed_from(c, m)
        if seed is None:
            raise ProtocolError(f"{m}: field 'seed-partner' must name the seed owner.")
        size = int(_get(c, "lookalike-size", int, m))
        threshold = _float(c, "lookalike-threshold", m)
        if size < 0 or threshold > 1 or (size == 0 and threshold == 0):
            raise ProtocolError(f"{m}: give a size >= 1 or a threshold in (0, 1].")
        return cls(run_id=_run_id(c, m), spec_fingerprint=_get(c, "spec-fingerprint", str, m),
                   model=_get(c, "lookalike-model", str, m), seed=seed, size=size,
                   threshold=threshold)


@dataclass(frozen=True)
class LookalikeReply:
    """An empty acknowledgement: no count, no score, nothing about the customers."""

    events: tuple[()] = ()

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return RecordDict({_CONFIG: ConfigRecord({_VERSION: PROTOCOL_VERSION})})

    @classmethod
    def from_record(cls, content: RecordDict) -> LookalikeReply:
        """Decode and validate."""
        _config(content, f"{MessageKind.LOOKALIKE} reply")
        return cls()

