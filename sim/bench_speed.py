"""Speed and scale benchmarks of the segmentation protocol.

Each measurement runs the pipeline on Flower's simulation engine and the same protocol in
process with plain NumPy (:mod:`fedprofile.sim.inprocess`), so the framework's overhead is a ratio
measured in one run. Peak memory is the sum of the resident sets of this process and all
its descendants (Ray's workers included), sampled every 0.2 s.

Data at scale are written to one Parquet file per partner, chunk by chunk, before timing;
the runner passes the paths, and every partner streams its file into a float32 matrix
cache that it then reads memory-mapped (:mod:`fedprofile.io.matrix_store`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.contract.parser import load_spec
from fedprofile.contract.spec import NumericFeature
from fedprofile.errors import ContractError
from fedprofile.io.tables import write_table
from fedprofile.presets.datasets import load_preset
from fedprofile.presets.partition import PartitionRule, PartnerFile, partition_frame
from fedprofile.processes import tree_rss
from fedprofile.protocol import MessageKind
from fedprofile.sim.inprocess import NoisePlacement, run_kmeans_inprocess
from fedprofile.sim.runner import default_workers, simulate

__all__ = ["SpeedRow", "plot_speed", "replicate_with_jitter", "speed_run", "speed_table",
           "write_partner_files"]

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
                          seed: int | Sequence[int]) -> pd.DataFrame:
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


def write_partner_files(frame: pd.DataFrame, out_dir: Path, *, partners: int, customers: int,
                        numeric: list[str], seed: int, chunk_rows: int = 250_000
                        ) -> list[PartnerFile]:
    """Each partner's file of an IID split, written without holding more than one chunk.

    ``customers = 0`` splits ``frame`` itself; more customers are a jittered scale-up
    (:func:`replicate_with_jitter`) generated and written chunk by chunk, so the data are
    never held whole in this process.
    """
    if customers and customers < partners:
        raise ContractError(f"{customers:,} customers cannot be split over {partners} partners; "
                            "give at least one customer per partner (or 0 for the data set "
                            "as shipped).")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not customers:
        parts = partition_frame(frame, PartitionRule("iid"), partners, seed=seed)
        return [PartnerFile(name=p.name, path=write_table(p.frame, out_dir / f"{i:02d}.parquet"))
                for i, p in enumerate(parts)]
    files = []
    for pid in range(partners):
        size = customers // partners + (pid < customers % partners)
        path = out_dir / f"{pid:02d}.parquet"
        writer: pq.ParquetWriter | None = None
        for chunk, start in enumerate(range(0, size, chunk_rows)):
            rows = replicate_with_jitter(frame, min(chunk_rows, size - start), numeric=numeric,
                                         seed=(seed, pid, chunk))
            table = pa.Table.from_pandas(rows, preserve_index=False,
                                         schema=writer.schema if writer else None)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        if writer:
            writer.close()
        files.append(PartnerFile(name=f"iid-{pid}", path=path))
    return files


@dataclass(frozen=True)
class SpeedRow:
    """One speed measurement: whole runs and their stages, on Flower and in process.

    The first stage is the partners' profile round, where each builds its matrix cache
    (in process: the same build, one partner after another); the others are k-means rounds.
    """

    partners: int
    customers: int
    workers: int
    noise: str
    flower_s: float
    inprocess_s: float
    flower_build_s: float
    inprocess_build_s: float
    rounds_s: list[float]
    inprocess_rounds_s: float
    bytes_per_partner_round: float
    peak_rss_mb: float

    @property
    def overhead(self) -> float:
        """Wall time on Flower over the in-process reference."""
        return self.flower_s / self.inprocess_s

    @property
    def median_later_round_s(self) -> float:
        """Median k-means round after the first (which has the start or the key setup)."""
        later = self.rounds_s[1:] or self.rounds_s
        return float(np.median(later)) if later else 0.0


def _inprocess_seconds(files: list[PartnerFile], spec_path: Path, state_dir: Path, k: int,
                       seed: int, threads: int, noise: NoisePlacement) -> tuple[float, float]:
    """The same partners' work and protocol in one process: (matrix build, rounds) seconds.

    NumPy's BLAS gets ``threads`` threads: as many cores as Flower's workers get (Ray gives
    each worker one core and one BLAS thread).
    """
    with threadpool_limits(limits=threads):
        start = time.perf_counter()
        matrices = [PartnerSite(NodeConfig(data_path=str(f.path), spec=str(spec_path),
                                           partner_name=f.name,
                                           state_dir=str(state_dir / f.name))).matrix()
                    for f in files]
        built = time.perf_counter()
        run_kmeans_inprocess(matrices, load_spec(spec_path), k=k, epsilon=1.0, seed=seed,
                             noise_seed=seed, noise=noise)
        return built - start, time.perf_counter() - built


def speed_run(*, dataset: str = "bank", partners: int = 5, customers: int = 0, k: int = 6,
              seed: int = 0, workers: int | None = None, noise: NoisePlacement = "partner"
              ) -> SpeedRow:
    """Time one private segmentation on Flower and in process, with bytes and peak memory.

    ``noise = "secagg"`` runs every release through secure aggregation (no dropouts
    planned); its bytes per round count the masked k-means reply and the unmasking replies
    (spread over the partners), and its first round includes the stage's key and share
    exchange.

    Both read the same partner files (written first, not timed) and keep their partners'
    state in separate folders, so each builds its own matrix caches. ``workers`` is how many
    partners Flower computes at a time (default: the machine's cores, at most 2); the
    reference computes one at a time with as many BLAS threads.
    """
    workers = workers or default_workers()
    preset = load_preset(dataset)
    spec = load_spec(preset.spec_path)
    numeric = [f.column or f.name for f in spec.features if isinstance(f, NumericFeature)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = write_partner_files(preset.frame, root / "data", partners=partners,
                                    customers=customers, numeric=numeric, seed=seed)
        build, rounds = _inprocess_seconds(files, preset.spec_path, root / "inprocess", k, seed,
                                           threads=workers, noise=noise)
        with peak_rss() as peak:
            start = time.perf_counter()
            result = simulate(files, spec_path=preset.spec_path, out_dir=root / "out",
                              state_dir=root / "state",
                              run_config={"k": k, "epsilon": 1.0, "noise": noise},
                              seed=seed, evaluate=False, capture=root / "capture",
                              workers=workers)
            flower = time.perf_counter() - start
        sent = _bytes_per_round(root / "capture")
    assert not isinstance(result.model, dict)  # a segmentation run
    times = result.model.params["round_seconds"]
    return SpeedRow(partners=partners, customers=customers or len(preset.frame),
                    workers=workers, noise=noise, flower_s=flower,
                    inprocess_s=build + rounds,
                    flower_build_s=sum(t["seconds"] for t in times
                                       if t["message"] == MessageKind.PROFILE),
                    inprocess_build_s=build,
                    rounds_s=[t["seconds"] for t in times if t["message"] == MessageKind.KMEANS],
                    inprocess_rounds_s=rounds,
                    bytes_per_partner_round=sent,
                    peak_rss_mb=peak[0] / 2**20)


def _bytes_per_round(capture: Path) -> float:
    """Mean bytes one partner sent per k-means round (with secagg: its unmasking replies too).

    A partner answers the unmask step only in the rounds it is asked, so the unmasking
    bytes are spread over all partner-rounds.
    """
    kmeans = [f.stat().st_size for f in capture.rglob("*kmeans*.bin")]
    unmask = [f.stat().st_size for f in capture.rglob("*secagg_unmask*.bin")]
    if not kmeans:
        return 0.0
    return float((sum(kmeans) + sum(unmask)) / len(kmeans))


def speed_table(rows: Sequence[SpeedRow]) -> str:
    """The speed measurements as a Markdown table (the one BENCHMARKS.md quotes)."""
    lines = ["| partners | customers | noise | Flower workers | Flower wall (s) | in-process (s) | "
             "ratio | cache build, Flower / in-process (s) | k-means rounds, Flower (s) | median "
             "later round, Flower (s) | k-means rounds, in-process (s) | bytes / partner / round "
             "| peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rounds = " ".join(f"{s:.2f}" for s in r.rounds_s)
        lines.append(f"| {r.partners} | {r.customers:,} | {r.noise} | {r.workers} | "
                     f"{r.flower_s:.1f} | {r.inprocess_s:.1f} | {r.overhead:.2f} | "
                     f"{r.flower_build_s:.1f} / {r.inprocess_build_s:.1f} | {rounds} | "
                     f"{r.median_later_round_s:.2f} | {r.inprocess_rounds_s:.1f} | "
                     f"{r.bytes_per_partner_round:,.0f} | {r.peak_rss_mb:,.0f} |")
    return "\n".join(lines)


def plot_speed(rows: Sequence[SpeedRow], path: Path) -> Path:
    """Wall time (Flower, in process) and peak memory against customers and partners.

    Rows sharing a partner count form the customer curve; rows sharing a customer count
    form the partner curve; a panel is drawn only where such a series has two points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for axis, other in (("customers", "partners"), ("partners", "customers")):
        groups: dict[int, list[SpeedRow]] = {}
        for r in rows:
            groups.setdefault(getattr(r, other), []).append(r)
        fixed, chosen = max(groups.items(), key=lambda item: len(item[1]))
        if len(chosen) > 1:
            series.append((axis, other, fixed, sorted(chosen, key=lambda r: getattr(r, axis))))
    if not series:
        raise ValueError("A speed plot needs two or more customer counts or partner counts.")
    fig, axes = plt.subplots(len(series), 2, figsize=(10, 3.6 * len(series)), squeeze=False)
    for (axis, other, fixed, chosen), (time_ax, mem_ax) in zip(series, axes, strict=True):
        x = [getattr(r, axis) for r in chosen]
        time_ax.plot(x, [r.flower_s for r in chosen], "o-", label="Flower simulation")
        time_ax.plot(x, [r.inprocess_s for r in chosen], "s--", label="in process (NumPy)")
        time_ax.set_ylabel("wall time (s)")
        mem_ax.plot(x, [r.peak_rss_mb / 1024 for r in chosen], "o-", color="tab:red")
        mem_ax.axhline(4.0, color="grey", linestyle=":", label="4 GiB")
        mem_ax.set_ylabel("peak RSS, whole process tree (GiB)")
        mem_ax.set_ylim(bottom=0)
        for ax in (time_ax, mem_ax):
            ax.set_xscale("log")
            ax.set_xlabel(f"{axis} ({other} = {fixed:,})")
            ax.grid(True, alpha=0.3)
            ax.legend()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)
    return path
