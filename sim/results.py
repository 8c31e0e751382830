"""What a simulation returns, and the progress relay of its rounds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedprofile.models.lookalike_model import LookalikeModel
from fedprofile.models.response_model import ResponseModel
from fedprofile.models.segment_model import SegmentModel
from fedprofile.presets.partition import Partition

__all__ = ["RoundHandler", "SimulationResult", "frame_partitions"]


@dataclass(frozen=True)
class SimulationResult:
    """Where a simulation wrote its outputs, and its metrics."""

    out_dir: Path
    model: SegmentModel | ResponseModel | LookalikeModel | dict[str, Any]
    metrics: dict[str, Any]
    stages: tuple[SimulationResult, ...] = ()
    suggestions: tuple[str, ...] = ()
    """Undeclared category values close to a declared one (partners' values: console only)."""

    @property
    def report(self) -> Path:
        """The HTML report."""
        return self.out_dir / "report.html"


class RoundHandler(logging.Handler):
    """Relays the coordinator's round log lines to a progress callback."""

    def __init__(self, callback: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        """Pass on a line that reports a round."""
        message = record.getMessage()
        if "round" in message:
            self.callback(message)



def frame_partitions(frames: Mapping[str, pd.DataFrame]) -> list[Partition]:
    """Wrap named tables as partitions (for callers that split data themselves)."""
    return [Partition(name=name, frame=frame) for name, frame in frames.items()]
