"""Response-model messages: noised sufficient statistics and clipped gradient sums."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

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
    _float,
    _get,
    _reply_record,
    _run_id,
)
from fedprofile.protocol.lookalike import seed_config, seed_from

__all__ = ["GradientReply", "GradientRequest", "GramReply", "GramRequest", "ResponseTask"]


def _task_config(task: ResponseTask) -> dict[str, Any]:
    return {_VERSION: PROTOCOL_VERSION, "run-id": task.run_id,
            "spec-fingerprint": task.spec_fingerprint, "stage": task.stage,
            "round": task.round, "target": task.target, "holdout": task.holdout,
            "holdout-seed": task.holdout_seed, **seed_config(task.seed)}


def _task_arrays(task: ResponseTask, **arrays: np.ndarray) -> ArrayRecord:
    named = {"segment-centers": Array(np.asarray(task.segment_centers, dtype=float)), **{
        k: Array(np.asarray(v, dtype=float)) for k, v in arrays.items()}}
    return ArrayRecord(named)


def _task_from(content: RecordDict, m: str) -> tuple[ConfigRecord, ResponseTask]:
    c = _config(content, m)
    holdout = _float(c, "holdout", m)
    if holdout >= 1.0:
        raise ProtocolError(f"{m}: field 'holdout' must be in [0, 1).")
    task = ResponseTask(run_id=_run_id(c, m),
                        spec_fingerprint=_get(c, "spec-fingerprint", str, m),
                        stage=_get(c, "stage", str, m), round=int(_get(c, "round", int, m)),
                        target=_get(c, "target", str, m), holdout=holdout,
                        holdout_seed=int(_get(c, "holdout-seed", int, m)),
                        segment_centers=_array(content, "segment-centers", m),
                        seed=seed_from(c, m))
    if task.segment_centers.size and task.segment_centers.ndim != 2:
        raise ProtocolError(f"{m}: field 'segment-centers' must be empty or a k x d matrix; "
                            f"got shape {task.segment_centers.shape}.")
    return c, task


@dataclass(frozen=True)
class ResponseTask:
    """What every response-model instruction names: run, contract, target and data split.

    ``segment_centers`` (k x d, or empty) makes the model segment-aware: the partner adds
    the one-hot segment of each customer to its features. ``seed`` makes it a lookalike
    model: the label is seed membership and ``target`` is unused ("").
    """

    run_id: str
    spec_fingerprint: str
    stage: str
    round: int
    target: str
    holdout: float
    holdout_seed: int
    segment_centers: np.ndarray
    seed: SeedAudience | None = None


@dataclass(frozen=True)
class GramRequest:
    """``train.gram``: release noised ``Z'Z`` (upper triangle) and, optionally, ``Z'y``.

    ``Z`` is the customer vector with the segment one-hot (if any) and a constant 1.
    """

    task: ResponseTask
    gram_noise_multiplier: float
    target_noise_multiplier: float
    with_target: bool

    message_type: ClassVar[str] = MessageKind.GRAM

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        cfg = _task_config(self.task) | {
            "gram-noise-multiplier": self.gram_noise_multiplier,
            "target-noise-multiplier": self.target_noise_multiplier,
            "with-target": self.with_target}
        return RecordDict({_ARRAYS: _task_arrays(self.task), _CONFIG: ConfigRecord(cfg)})

    @classmethod
    def from_record(cls, content: RecordDict) -> GramRequest:
        """Decode and validate."""
        m = "train.gram request"
        c, task = _task_from(content, m)
        return cls(task=task, gram_noise_multiplier=_float(c, "gram-noise-multiplier", m),
                   target_noise_multiplier=_float(c, "target-noise-multiplier", m),
                   with_target=bool(_get(c, "with-target", bool, m)))


@dataclass(frozen=True)
class GramReply:
    """Noised upper triangle of ``Z'Z`` (row-major, with diagonal) and ``Z'y`` (or empty)."""

    gram_upper: np.ndarray
    xty: np.ndarray
    events: tuple[PrivacyEvent, ...]

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return _reply_record({"gram-upper": self.gram_upper, "xty": self.xty}, self.events)

    @classmethod
    def from_record(cls, content: RecordDict, *, dim: int | None = None) -> GramReply:
        """Decode and validate; ``dim`` is the expected dimension of ``Z``."""
        m = "train.gram reply"
        c = _config(content, m)
        upper, xty = _array(content, "gram-upper", m), _array(content, "xty", m)
        if dim is not None and (upper.shape != (dim * (dim + 1) // 2,)
                                or xty.shape not in ((dim,), (0,))):
            raise ProtocolError(f"{m}: expected a Gram triangle of {dim * (dim + 1) // 2} "
                                f"values and Z'y of {dim}, got {upper.shape} and {xty.shape}.")
        return cls(gram_upper=upper, xty=xty,
                   events=_events_from_json(_get(c, "events", str, m), m))


@dataclass(frozen=True)
class GradientRequest:
    """``train.gradient``: the noised sum of per-customer clipped logistic-loss gradients."""

    task: ResponseTask
    theta: np.ndarray
    clip: float
    noise_multiplier: float

    message_type: ClassVar[str] = MessageKind.GRADIENT

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        cfg = _task_config(self.task) | {"clip": self.clip,
                                         "noise-multiplier": self.noise_multiplier}
        return RecordDict({_ARRAYS: _task_arrays(self.task, theta=self.theta),
                           _CONFIG: ConfigRecord(cfg)})

    @classmethod
    def from_record(cls, content: RecordDict) -> GradientRequest:
        """Decode and validate."""
        m = "train.gradient request"
        c, task = _task_from(content, m)
        clip = _float(c, "clip", m)
        if clip <= 0:
            raise ProtocolError(f"{m}: field 'clip' must be positive.")
        theta = _array(content, "theta", m)
        if theta.ndim != 1:
            raise ProtocolError(f"{m}: 'theta' must be a vector.")
        return cls(task=task, theta=theta, clip=clip,
                   noise_multiplier=_float(c, "noise-multiplier", m))


@dataclass(frozen=True)
class GradientReply:
    """The noised sum of clipped per-customer gradients."""

    gradient: np.ndarray
    events: tuple[PrivacyEvent, ...]

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return _reply_record({"gradient": self.gradient}, self.events)

    @classmethod
    def from_record(cls, content: RecordDict, *, dim: int | None = None) -> GradientReply:
        """Decode and validate; ``dim`` is the expected length."""
        m = "train.gradient reply"
        c = _config(content, m)
        gradient = _array(content, "gradient", m)
        if dim is not None and gradient.shape != (dim,):
            raise ProtocolError(f"{m}: expected a gradient of {dim} values, got "
                                f"{gradient.shape}.")
        return cls(gradient=gradient, events=_events_from_json(_get(c, "events", str, m), m))
