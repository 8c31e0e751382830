"""Record names, keys, codes and the checked readers every payload uses."""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any, ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedprofile.errors import ProtocolError
from fedprofile.privacy.events import PrivacyEvent, event_from_dict

__all__ = ["MAX_ARRAY_ELEMENTS", "PROTOCOL_VERSION", "RUN_ID_PATTERN", "ErrorCode",
           "MessageKind"]

PROTOCOL_VERSION = 2

# Record names and keys: the only place they are spelled.
_ARRAYS = "arrays"
_CONFIG = "config"
_VERSION = "protocol-version"

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a run id may be: it names files at the partner, so never a path."""


class MessageKind:
    """Message types (``"<category>.<action>"``) of every stage; not instantiable."""

    PROFILE: ClassVar[str] = "query.profile"
    KMEANS: ClassVar[str] = "train.kmeans"
    GRAM: ClassVar[str] = "train.gram"
    GRADIENT: ClassVar[str] = "train.gradient"
    SCORE: ClassVar[str] = "query.score"
    LOOKALIKE: ClassVar[str] = "query.lookalike"
    OVERLAP_BLIND: ClassVar[str] = "query.overlap_blind"
    OVERLAP_RESPOND: ClassVar[str] = "query.overlap_respond"
    OVERLAP_COUNT: ClassVar[str] = "query.overlap_count"

    def __new__(cls) -> MessageKind:  # noqa: D102
        raise TypeError(f"{cls.__name__} is a namespace of constants and cannot be instantiated.")


class ErrorCode:
    """Codes of the error replies a partner sends on purpose; not instantiable."""

    POLICY_REFUSED: ClassVar[int] = 100
    CONTRACT_MISMATCH: ClassVar[int] = 101
    DATA_ERROR: ClassVar[int] = 102
    PROTOCOL_ERROR: ClassVar[int] = 103
    SECAGG_REFUSED: ClassVar[int] = 104
    INTERNAL: ClassVar[int] = 199

    def __new__(cls) -> ErrorCode:  # noqa: D102
        raise TypeError(f"{cls.__name__} is a namespace of constants and cannot be instantiated.")


def _config(content: RecordDict, message: str) -> ConfigRecord:
    if _CONFIG not in content:
        raise ProtocolError(f"{message}: the message has no {_CONFIG!r} record.")
    config = content[_CONFIG]
    if not isinstance(config, ConfigRecord):
        raise ProtocolError(f"{message}: record {_CONFIG!r} must be a ConfigRecord.")
    version = config.get(_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"{message}: protocol version {version!r} is not supported; "
                            f"this node speaks version {PROTOCOL_VERSION}.")
    return config


def _get(config: ConfigRecord, key: str, kind: type | tuple[type, ...], message: str) -> Any:
    if key not in config:
        raise ProtocolError(f"{message}: missing field {key!r}.")
    value = config[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ProtocolError(f"{message}: field {key!r} must be {kind}, got bool.")
    if not isinstance(value, kind):
        raise ProtocolError(f"{message}: field {key!r} must be {kind}, got "
                            f"{type(value).__name__}.")
    return value


def _run_id(config: ConfigRecord, message: str) -> str:
    value = _get(config, "run-id", str, message)
    if not RUN_ID_PATTERN.fullmatch(value):
        raise ProtocolError(f"{message}: field 'run-id' must be 1 to 64 letters, digits, '_' "
                            "or '-'.")
    return value


def _float(config: ConfigRecord, key: str, message: str, *, allow_inf: bool = False) -> float:
    value = float(_get(config, key, (int, float), message))
    if math.isnan(value) or (math.isinf(value) and not allow_inf) or value < 0:
        raise ProtocolError(f"{message}: field {key!r} must be a non-negative finite number.")
    return value


MAX_ARRAY_ELEMENTS = 1 << 22
"""Most values one received array may hold (4,194,304: 32 MiB as float64)."""

_NUMPY_STYPE = "numpy.ndarray"
"""Flower's serialization type of NumPy arrays (``np.save`` bytes, never pickled)."""

_HEADER_BYTES = 1 << 16
"""Slack for the ``.npy`` header in a received array's bytes."""


def _npy_header(data: bytes, key: str, message: str, *, limit: int | None = None
                ) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of serialized ``.npy`` bytes, read from the header only.

    At most ``limit`` values (:data:`MAX_ARRAY_ELEMENTS` unless a message says otherwise).
    """
    limit = MAX_ARRAY_ELEMENTS if limit is None else limit
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        if version not in ((1, 0), (2, 0)):
            raise ValueError("unsupported format version")
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(buffer)
    except (ValueError, TypeError, SyntaxError, EOFError) as exc:
        raise ProtocolError(f"{message}: array {key!r} is not a valid NumPy array "
                            f"({type(exc).__name__}).") from None
    if dtype.kind not in "fiu" or dtype.shape:
        raise ProtocolError(f"{message}: array {key!r} must hold real numbers; got dtype "
                            f"kind {dtype.kind!r}.")
    elements = math.prod(shape)
    if elements > limit:
        raise ProtocolError(f"{message}: array {key!r} of shape {tuple(shape)} holds "
                            f"{elements} values; at most {limit} are accepted.")
    if len(data) != buffer.tell() + elements * dtype.itemsize:
        raise ProtocolError(f"{message}: array {key!r} has {len(data)} bytes, which do not "
                            f"match its header (shape {tuple(shape)}, dtype {dtype.str}).")
    return tuple(shape), dtype


def _array(content: RecordDict, key: str, message: str) -> np.ndarray:
    """A received array, bounded before anything is allocated, as finite float64 values.

    Its serialization, size in bytes, header shape and dtype are checked against
    :data:`MAX_ARRAY_ELEMENTS` before it is decoded or converted.
    """
    arrays = content.get(_ARRAYS)
    if not isinstance(arrays, ArrayRecord):
        raise ProtocolError(f"{message}: the message has no {_ARRAYS!r} ArrayRecord.")
    if key not in arrays:
        raise ProtocolError(f"{message}: missing array {key!r}.")
    array = arrays[key]
    if array.stype != _NUMPY_STYPE:
        raise ProtocolError(f"{message}: array {key!r} must be serialized as "
                            f"{_NUMPY_STYPE!r}.")
    if len(array.data) > MAX_ARRAY_ELEMENTS * 8 + _HEADER_BYTES:
        raise ProtocolError(f"{message}: array {key!r} has {len(array.data)} bytes; at most "
                            f"{MAX_ARRAY_ELEMENTS * 8 + _HEADER_BYTES} are accepted.")
    shape, dtype = _npy_header(array.data, key, message)
    decoded = np.load(io.BytesIO(array.data), allow_pickle=False)
    if decoded.shape != shape or decoded.dtype != dtype:
        raise ProtocolError(f"{message}: array {key!r} does not match its header.")
    value = decoded.astype(np.float64, copy=False)
    if not np.all(np.isfinite(value)):
        raise ProtocolError(f"{message}: array {key!r} holds non-finite values.")
    return value


def _events_json(events: tuple[PrivacyEvent, ...]) -> str:
    return json.dumps([e.to_dict() for e in events])


def _events_from_json(text: str, message: str) -> tuple[PrivacyEvent, ...]:
    try:
        decoded = json.loads(text)
        if not isinstance(decoded, list):
            raise TypeError("not a list")
        return tuple(event_from_dict(d) for d in decoded)
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"{message}: field 'events' is not a valid event list "
                            f"({exc}).") from None


def _reply_record(arrays: dict[str, np.ndarray], events: tuple[PrivacyEvent, ...]
                  ) -> RecordDict:
    """A reply: named float arrays and the ledger events of the release."""
    return RecordDict({
        _ARRAYS: ArrayRecord({k: Array(np.asarray(v, dtype=float)) for k, v in arrays.items()}),
        _CONFIG: ConfigRecord({_VERSION: PROTOCOL_VERSION, "events": _events_json(events)})})
