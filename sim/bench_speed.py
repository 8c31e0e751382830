"""Speed and scale benchmarks of the segmentation protocol.

Each measurement runs the pipeline on Flower's simulation engine and the same protocol in
process with plain NumPy (:mod:`sim.inprocess`), so the framework's overhead is a ratio
measured in one run. Peak memory is the sum of the resident sets of this process and all
its descendants (Ray's workers included), sampled every 0.2 s.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedprofile.contract import NumericFeature, load_spec
from fedprofile.features import transform_frame
from fedprofile.processes import tree_rss
from sim.datasets import load_preset
from sim.inprocess import run_kmeans_inprocess
from sim.partition import Partition, PartitionRule, partition_frame
from sim.runner import simulate

__all__ = ["SpeedRow", "replicate_with_jitter", "speed_run"]

@contextlib.contextmanager
def peak_rss() -> Iterator[list[int]]:
    """Track the peak resident memory of this process tree; yields a one-item list."""
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(os.getpid()))
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def replicate_with_jitter(frame: pd.DataFrame, n_rows: int, *, numeric: list[str],
                          seed: int) -> pd.DataFrame:
    """A synthetic scale-up: real rows drawn with replacement, numeric columns jittered.

    Each numeric value gets multiplicative noise of 5 % (and integers stay integers), so
    rows are not exact copies; categorical values are kept as drawn.
    """
    rng = np.random.default_rng(seed)
    out = frame.iloc[rng.integers(0, len(frame), size=n_rows)].reset_index(drop=True)
    for column in numeric:
        values = out[column].to_numpy(dtype=float)
        jittered = values * rng.normal(1.0, 0.05, size=n_rows)
        out[column] = np.round(jittered) if pd.api.types.is_integer_dtype(frame[column]) \
            else jittered
    return out


@dataclass(frozen=True)
class SpeedRow:
    """One speed measurement."""

    partners: int
    customers: int
    flower_s: float
    inprocess_s: float
    rounds_s: list[float]
    bytes_per_partner_round: float
    peak_rss_mb: float

    @property
    def overhead(self) -> float:
        """Wall time on Flower over the in-process reference."""
        return self.flower_s / self.inprocess_s


def _inprocess_seconds(parts: list[Partition], spec_path: Path, k: int, seed: int) -> float:
    start = time.perf_counter()
    spec = load_spec(spec_path)
    mats = [transform_frame(p.frame, spec).matrix for p in parts]
    run_kmeans_inprocess(mats, spec, k=k, epsilon=1.0, seed=seed, noise_seed=seed)
    return time.perf_counter() - start


def speed_run(*, dataset: str = "bank", partners: int = 5, customers: int = 0, k: int = 6,
              seed: int = 0) -> SpeedRow:
    """Time one private segmentation on Flower and in process, with bytes and peak memory."""
    preset = load_preset(dataset)
    frame = preset.frame
    if customers and customers != len(frame):
        spec = load_spec(preset.spec_path)
        numeric = [f.column or f.name for f in spec.features if isinstance(f, NumericFeature)]
        frame = replicate_with_jitter(frame, customers, numeric=numeric, seed=seed)
    parts = partition_frame(frame, PartitionRule("iid"), partners, seed=seed)
    del frame
    inprocess = _inprocess_seconds(parts, preset.spec_path, k, seed)
    with tempfile.TemporaryDirectory() as tmp, peak_rss() as peak:
        root = Path(tmp)
        start = time.perf_counter()
        result = simulate(parts, spec_path=preset.spec_path, out_dir=root / "out",
                          state_dir=root / "state", run_config={"k": k, "epsilon": 1.0},
                          seed=seed, evaluate=False, capture=root / "capture")
        flower = time.perf_counter() - start
        sent = [f.stat().st_size for f in (root / "capture").rglob("*kmeans*.bin")]
    rounds = [t["seconds"] for t in result.model.params["round_seconds"]]
    return SpeedRow(partners=partners, customers=sum(len(p.frame) for p in parts),
                    flower_s=flower, inprocess_s=inprocess, rounds_s=rounds,
                    bytes_per_partner_round=float(np.mean(sent)) if sent else 0.0,
                    peak_rss_mb=peak[0] / 2**20)
