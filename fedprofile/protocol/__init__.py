"""The server-client protocol: message types, record keys and typed payloads.

This package is the single source of truth both sides import. Each payload is a frozen
dataclass with one ``to_record()``/``from_record()`` pair that checks keys, types, shapes and
finiteness in both directions, so a malformed message fails loudly at the boundary with a
:class:`~fedprofile.errors.ProtocolError` that names the field. Record names and keys are
spelled only in these modules.
"""

from fedprofile.protocol.codec import PROTOCOL_VERSION, ErrorCode, MessageKind
from fedprofile.protocol.lookalike import LookalikeReply, LookalikeRequest
from fedprofile.protocol.response import (
    GradientReply,
    GradientRequest,
    GramReply,
    GramRequest,
    ResponseTask,
)
from fedprofile.protocol.scoring import ScoreReply, ScoreRequest
from fedprofile.protocol.segmentation import (
    KMeansReply,
    KMeansRequest,
    ProfileReply,
    ProfileRequest,
)

__all__ = [
    "PROTOCOL_VERSION",
    "ErrorCode",
    "GradientReply",
    "GradientRequest",
    "GramReply",
    "GramRequest",
    "KMeansReply",
    "KMeansRequest",
    "LookalikeReply",
    "LookalikeRequest",
    "MessageKind",
    "ProfileReply",
    "ProfileRequest",
    "ResponseTask",
    "ScoreReply",
    "ScoreRequest",
]
