"""How fast a partner reads its table into the matrix cache, from each kind of source.

The same synthetic customers (the bank rows scaled up, :func:`~fedprofile.sim.bench_speed.
replicate_with_jitter`) are written, chunk by chunk, as one CSV file, one Parquet file, a
folder of Parquet files and, given a PostgreSQL database, a table loaded with ``COPY``.
Each source is then read by the partner's own code (:meth:`fedprofile.client.site.
PartnerSite.matrix`: streamed in chunks, transformed, appended as float32 to the cache) in a
fresh process, so each measurement's peak resident memory is its own. The caches are
compared byte for byte: every source must give the CSV's matrix.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.contract.parser import load_spec
from fedprofile.contract.spec import NumericFeature
from fedprofile.errors import DataError, FedprofileError
from fedprofile.io.sql import SqlSource, database_password
from fedprofile.presets.datasets import load_preset
from fedprofile.processes import tree_rss
from fedprofile.sim.bench_speed import replicate_with_jitter

__all__ = ["SOURCE_KINDS", "SourceRow", "read_source", "source_table", "sources_run",
           "write_sources"]

SOURCE_KINDS = ("csv", "parquet", "parquet-dir", "postgresql")
GENERATE_ROWS = 250_000


@dataclass(frozen=True)
class SourceRow:
    """One source read into the matrix cache."""

    source: str
    customers: int
    seconds: float
    peak_rss_mb: float
    base_rss_mb: float
    cache_mb: float
    same_as_csv: bool | None

    @property
    def rows_per_second(self) -> float:
        """Customers read into the cache per second."""
        return self.customers / self.seconds if self.seconds else float("nan")


@dataclass(frozen=True)
class BenchSources:
    """Where the benchmark's copies of the same rows are."""

    csv: Path
    parquet: Path
    parquet_dir: Path
    postgresql: tuple[str, str] | None  # (URL without password, table)

    def location(self, kind: str) -> tuple[str, str]:
        """(location, query) a partner's node config would give for ``kind``."""
        if kind == "postgresql":
            if self.postgresql is None:
                raise DataError("No PostgreSQL database was given (--postgres URL).")
            return self.postgresql
        return str({"csv": self.csv, "parquet": self.parquet,
                    "parquet-dir": self.parquet_dir}[kind]), ""


def _table_name(customers: int) -> str:
    return f"fedprofile_bench_{customers}"


def write_sources(folder: Path, *, dataset: str, customers: int, seed: int,
                  postgres: str | None, chunk_rows: int = GENERATE_ROWS) -> BenchSources:
    """Write the same ``customers`` rows as CSV, Parquet, a Parquet folder (and a table).

    Rows are generated and written one chunk at a time. ``postgres`` is the URL (without
    password; the password from ``FEDPROFILE_DB_PASSWORD``) of a database the benchmark may
    load its table into with ``COPY``: this loader is the benchmark's, not the partner's,
    whose connections are read-only.
    """
    preset = load_preset(dataset)
    spec = load_spec(preset.spec_path)
    numeric = [f.column or f.name for f in spec.features if isinstance(f, NumericFeature)]
    folder.mkdir(parents=True, exist_ok=True)
    table = _table_name(customers)
    paths = BenchSources(csv=folder / "customers.csv", parquet=folder / "customers.parquet",
                         parquet_dir=folder / "customers-parts",
                         postgresql=(postgres, table) if postgres else None)
    shutil.rmtree(paths.parquet_dir, ignore_errors=True)
    paths.parquet_dir.mkdir()
    loader = _Loader(postgres, table) if postgres else None
    writer: pq.ParquetWriter | None = None
    try:
        with paths.csv.open("w", encoding="utf-8", newline="") as csv_file:
            for index, start in enumerate(range(0, customers, chunk_rows)):
                rows = replicate_with_jitter(preset.frame, min(chunk_rows, customers - start),
                                             numeric=numeric, seed=(seed, index))
                arrow = pa.Table.from_pandas(rows, preserve_index=False,
                                             schema=writer.schema if writer else None)
                if writer is None:
                    writer = pq.ParquetWriter(paths.parquet, arrow.schema)
                    rows.head(0).to_csv(csv_file, index=False)
                    if loader is not None:
                        loader.create(rows)
                writer.write_table(arrow)
                pq.write_table(arrow, paths.parquet_dir / f"part-{index:05d}.parquet")
                text = rows.to_csv(index=False, header=False)
                csv_file.write(text)
                if loader is not None:
                    loader.copy(text)
        if loader is not None:
            loader.finish()
    finally:
        if writer is not None:
            writer.close()
        if loader is not None:
            loader.close()
    return paths


class _Loader:
    """Loads the benchmark's table into PostgreSQL with ``COPY`` (a writable connection)."""

    def __init__(self, url: str, table: str) -> None:
        import sqlalchemy as sa

        if not re.fullmatch(r"[a-z_][a-z0-9_]*", table):
            raise DataError(f"Benchmark table name {table!r} is not a plain name.")
        self.label = SqlSource(url, table).label  # refuses a URL holding a password
        self.table = table
        self.engine = sa.create_engine(sa.engine.make_url(url).set(
            password=database_password()), poolclass=sa.pool.NullPool)
        try:
            self.conn: Any = self.engine.raw_connection()  # psycopg's own connection
        except sa.exc.SQLAlchemyError as exc:
            self.engine.dispose()
            cause = type(getattr(exc, "orig", None) or exc).__name__
            raise DataError(f"Database {self.label!r}: cannot connect to load the benchmark "
                            f"table ({cause}).") from None
        self.sql = ""

    def create(self, rows: Any) -> None:
        """An empty table typed like ``rows`` (pandas' SQL types)."""
        rows.head(0).to_sql(self.table, self.engine, index=False, if_exists="replace")
        columns = ", ".join(f'"{c}"' for c in rows.columns)
        self.sql = f"COPY {self.table} ({columns}) FROM STDIN (FORMAT csv)"

    def copy(self, text: str) -> None:
        with self.conn.cursor() as cur, cur.copy(self.sql) as copy:
            copy.write(text)
        self.conn.commit()

    def finish(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"ANALYZE {self.table}")
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


def _measure(location: str, query: str, spec: str, state: str) -> dict[str, Any]:
    """In a fresh process: build the partner's matrix cache; time and peak RSS."""
    key = "data-source" if query else "data-path"
    site = PartnerSite(NodeConfig.from_mapping({key: location, "data-query": query,
                                                "spec": spec, "partner-name": "bench",
                                                "state-dir": state}))
    _ = site.spec, site.source  # contract parsed, source opened: not part of the read
    base = tree_rss(os.getpid())
    start = time.perf_counter()
    matrix = site.matrix()
    seconds = time.perf_counter() - start
    cache = next((Path(state) / "cache").glob("matrix-*.npy"))
    return {"rows": int(matrix.shape[0]), "seconds": seconds, "base": base,
            "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "cache": str(cache)}


def _child(queue: Any, args: tuple[str, str, str, str]) -> None:
    try:
        queue.put(("ok", _measure(*args)))
    except FedprofileError as exc:
        queue.put(("error", str(exc)))
    except Exception as exc:  # noqa: BLE001 - the parent must hear of every failure
        queue.put(("error", f"Unexpected {type(exc).__name__} while reading the source."))


def read_source(location: str, query: str, *, spec: Path, state: Path) -> dict[str, Any]:
    """Read one source into a fresh matrix cache in a new process; its measurements."""
    shutil.rmtree(state, ignore_errors=True)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, (location, query, str(spec), str(state))))
    proc.start()
    while True:  # a reader killed (out of memory, a signal) sends nothing: do not wait forever
        try:
            status, value = queue.get(timeout=5.0)
            break
        except Empty:
            if not proc.is_alive():
                raise DataError(f"The reader of {location!r} stopped without a result (exit "
                                f"code {proc.exitcode}); was it out of memory?") from None
    proc.join()
    if status != "ok":
        raise DataError(value)
    return dict(value)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            sha.update(block)
    return sha.hexdigest()


def sources_run(folder: Path, *, customers: int, kinds: Sequence[str], dataset: str = "bank",
                postgres: str | None = None, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> list[SourceRow]:
    """Write the rows to each source, then read each into the cache; one row per source."""
    unknown = [k for k in kinds if k not in SOURCE_KINDS]
    if unknown:
        raise DataError(f"Unknown source kind(s) {unknown}; choose from "
                        f"{', '.join(SOURCE_KINDS)}.")
    say = progress or (lambda _msg: None)
    say(f"writing {customers:,} customers")
    if "postgresql" in kinds and not postgres:
        raise DataError("The postgresql source needs --postgres URL (a database the "
                        "benchmark may load its table into).")
    paths = write_sources(folder / "data", dataset=dataset, customers=customers, seed=seed,
                          postgres=postgres if "postgresql" in kinds else None)
    spec = load_preset(dataset).spec_path
    rows, reference = [], None
    for kind in ("csv", *(k for k in kinds if k != "csv")):
        say(f"reading {customers:,} customers from {kind}")
        location, query = paths.location(kind)
        measured = read_source(location, query, spec=Path(spec), state=folder / f"state-{kind}")
        cache = Path(measured["cache"])
        digest = _digest(cache)
        reference = reference or digest
        if kind in kinds:
            rows.append(SourceRow(source=kind, customers=measured["rows"],
                                  seconds=measured["seconds"],
                                  peak_rss_mb=measured["peak"] / 2**20,
                                  base_rss_mb=measured["base"] / 2**20,
                                  cache_mb=cache.stat().st_size / 2**20,
                                  same_as_csv=None if kind == "csv" else digest == reference))
        shutil.rmtree(folder / f"state-{kind}", ignore_errors=True)
    return rows


def source_table(rows: Sequence[SourceRow]) -> str:
    """The benchmark's Markdown table."""
    lines = ["| source | customers | read into the cache (s) | rows / s | peak RSS (MB) | "
             "RSS before reading (MB) | cache (MB) | same matrix as CSV |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same = "(reference)" if r.same_as_csv is None else ("yes" if r.same_as_csv else "NO")
        lines.append(f"| {r.source} | {r.customers:,} | {r.seconds:.1f} | "
                     f"{r.rows_per_second:,.0f} | {r.peak_rss_mb:,.0f} | {r.base_rss_mb:,.0f} | "
                     f"{r.cache_mb:,.0f} | {same} |")
    return "\n".join(lines)
