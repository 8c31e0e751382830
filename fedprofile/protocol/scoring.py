"""The local scoring message: partners apply published models and send nothing back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flwr.app import ConfigRecord, RecordDict

from fedprofile.protocol.codec import (
    _CONFIG,
    _VERSION,
    PROTOCOL_VERSION,
    MessageKind,
    _config,
    _get,
    _run_id,
)

__all__ = ["ScoreReply", "ScoreRequest"]


@dataclass(frozen=True)
class ScoreRequest:
    """``query.score``: score every customer locally with the published models (JSON text).

    The partner writes the scores to its own output folder; its reply holds nothing.
    """

    run_id: str
    spec_fingerprint: str
    segment_model: str
    response_model: str

    message_type: ClassVar[str] = MessageKind.SCORE

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return RecordDict({_CONFIG: ConfigRecord({
            _VERSION: PROTOCOL_VERSION, "run-id": self.run_id,
            "spec-fingerprint": self.spec_fingerprint, "segment-model": self.segment_model,
            "response-model": self.response_model})})

    @classmethod
    def from_record(cls, content: RecordDict) -> ScoreRequest:
        """Decode and validate."""
        m = "query.score request"
        c = _config(content, m)
        return cls(run_id=_run_id(c, m),
                   spec_fingerprint=_get(c, "spec-fingerprint", str, m),
                   segment_model=_get(c, "segment-model", str, m),
                   response_model=_get(c, "response-model", str, m))


@dataclass(frozen=True)
class ScoreReply:
    """An empty acknowledgement: no count, no score, nothing about the customers."""

    events: tuple[()] = ()

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return RecordDict({_CONFIG: ConfigRecord({_VERSION: PROTOCOL_VERSION})})

    @classmethod
    def from_record(cls, content: RecordDict) -> ScoreReply:
        """Decode and validate."""
        _config(content, "query.score reply")
        return cls()
