"""A partner's site: its configuration, contract, data cache, policy guard and noise source.

Built afresh for every message (in deployment each message runs in a new process), it keeps
nothing in module globals: the transformed matrix is cached in the partner's state folder,
keyed by the data file's identity and the contract's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import tomllib
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from fedprofile.config import NodeConfig
from fedprofile.contract.customers import ID_COLUMN, customer_table
from fedprofile.contract.design import DesignData, design_data
from fedprofile.contract.features import resolve_columns
from fedprofile.contract.parser import load_spec
from fedprofile.contract.spec import CategoricalFeature, FeatureSpec
from fedprofile.errors import ContractError, ProtocolError
from fedprofile.io.matrix_store import CHUNK_ROWS, STORAGE_DTYPE, frame_chunks, write_matrix
from fedprofile.io.sources import DataSource, open_source
from fedprofile.presets.datasets import preset_partition_file
from fedprofile.privacy.keys import load_key
from fedprofile.privacy.ledger import Ledger
from fedprofile.privacy.mechanisms import secure_rng
from fedprofile.privacy.policy import SIMULATION_POLICY, PartnerGuard, PartnerPolicy, load_policy
from fedprofile.privacy.pseudonym import Pseudonymizer
from fedprofile.protocol import ResponseTask

__all__ = ["PartnerSite", "resolve_node_config"]

T = TypeVar("T")

log = logging.getLogger("fedprofile.client")

CACHE_FORMAT = f"matrix-v2-{STORAGE_DTYPE.str}"
"""Part of the cache key: a cache written in another format is never reused."""


def _replace_cache(path: Path, pattern: str, write: Callable[[Path], T]) -> T:
    """Atomically write a cache file, removing stale ones of the same kind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*path.parent.glob(pattern), *path.parent.glob(f"tmp-{pattern}*")]:
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f"tmp-{path.name}")
    result = write(tmp)
    tmp.replace(path)
    return result


def resolve_node_config(node_config: Mapping[str, Any],
                        defaults: Mapping[int, Mapping[str, Any]] | None = None,
                        run_config: Mapping[str, Any] | None = None) -> NodeConfig:
    """Flower's node config completed for simulations.

    ``defaults`` are per-partition settings given by the ``fedprofile sim`` runner. Under
    ``flwr run`` a virtual node only knows its ``partition-id``: it then takes its slice of
    the run config's shipped ``dataset`` (see
    :func:`fedprofile.presets.datasets.preset_partition_file`) and the run config's ``spec``.
    A deployed node (no ``partition-id``) uses its own ``spec`` only: the run config is the
    coordinator's, and never names a file on the partner's disk.

    Raises
    ------
    ContractError
        If a deployed node's config has no ``spec``.
    """
    pid = node_config.get("partition-id")
    merged = dict((defaults or {}).get(int(pid), {}) if pid is not None else {})
    merged.update({k: v for k, v in node_config.items()
                   if k not in ("partition-id", "num-partitions")})
    run_config = run_config or {}
    if not merged.get("data-path") and run_config.get("dataset") and pid is not None:
        count = int(node_config.get("num-partitions", 1))
        merged["data-path"] = str(preset_partition_file(
            str(run_config["dataset"]), int(pid), count, Path(".fedprofile") / "flwr-sim"))
    if not merged.get("spec"):
        if pid is None:  # a coordinator never picks a file on a partner's disk
            raise ContractError("The partner's node config has no 'spec' (its own copy of "
                                "the feature contract); a deployed node never takes the "
                                "coordinator's. Set it with --node-config \"spec='...'\".")
        if run_config.get("spec"):
            merged["spec"] = str(run_config["spec"])
    return NodeConfig.from_mapping(merged, partition_id=None if pid is None else int(pid))


class PartnerSite:
    """Everything a partner needs to answer one instruction.

    Parameters
    ----------
    config : NodeConfig
        The partner's node configuration.
    """

    chunk_rows: int = CHUNK_ROWS
    """Rows per chunk when the matrix cache is built."""

    def __init__(self, config: NodeConfig) -> None:
        if not config.data_location:
            raise ContractError("The partner's node config has no 'data-path' or "
                                "'data-source' (its customer table); set it with "
                                "--node-config \"data-path='...'\".")
        if not config.spec:
            raise ContractError("The partner's node config has no 'spec' (its copy of the "
                                "feature contract).")
        self.config = config
        self.name = config.partner_name
        self.state_dir = Path(config.state_dir)

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any],
                         defaults: Mapping[int, Mapping[str, Any]] | None = None,
                         run_config: Mapping[str, Any] | None = None) -> PartnerSite:
        """Build from Flower's node config (see :func:`resolve_node_config`)."""
        return cls(resolve_node_config(node_config, defaults, run_config))

    @cached_property
    def spec(self) -> FeatureSpec:
        """The partner's copy of the contract."""
        return load_spec(self.config.spec)

    @cached_property
    def mapping(self) -> dict[str, str]:
        """Feature name -> local column name."""
        if not self.config.mapping:
            return {}
        path = Path(self.config.mapping)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ContractError(f"Column mapping {str(path)!r} cannot be read: {exc}") from None
        if not all(isinstance(v, str) for v in data.values()):
            raise ContractError(f"Column mapping {str(path)!r} must map feature names to column "
                                "names (strings).")
        return dict(data)

    @cached_property
    def policy(self) -> PartnerPolicy:
        """The partner's policy file; without one, the documented default policy.

        A simulated node (Flower gave it a ``partition-id``) without a file runs with no
        limits, as the user's own test of its own data; a deployed node never does.
        """
        if self.config.policy:
            return load_policy(self.config.policy)
        return SIMULATION_POLICY if self.config.simulation else PartnerPolicy()

    @cached_property
    def pseudonymizer(self) -> Pseudonymizer | None:
        """The partner's keyed pseudonymiser, when a key is configured."""
        if not self.config.key:
            return None
        region = self.spec.identity.region if self.spec.identity else "GB"
        return Pseudonymizer(load_key(self.config.key), default_region=region)

    @property
    def key_id(self) -> str:
        """Id of the partner's pseudonymisation key ("" without one)."""
        return self.pseudonymizer.key_id if self.pseudonymizer else ""

    @cached_property
    def ledger(self) -> Ledger:
        """The partner's own durable ledger."""
        return Ledger(self.state_dir / "ledger.sqlite")

    @cached_property
    def guard(self) -> PartnerGuard:
        """Enforces the policy against the ledger."""
        return PartnerGuard(self.policy, self.ledger, self.name)

    def check_contract(self, fingerprint: str) -> None:
        """Refuse an instruction made under a different contract."""
        if fingerprint != self.spec.fingerprint():
            raise ContractError(f"Partner {self.name!r} holds a different feature contract "
                                f"({self.spec.fingerprint()[:12]}) than the coordinator "
                                f"({fingerprint[:12]}); both must use the same spec file.")

    @cached_property
    def source(self) -> DataSource:
        """The partner's table: a file, a Parquet folder or a database query."""
        c = self.config
        return open_source(c.data_location, c.data_query, updated_at=c.data_updated_at)

    @property
    def source_label(self) -> str:
        """How errors name the partner's table (a database URL without its password)."""
        return self.source.label

    def _cache_key(self) -> str:
        """The cache's name: changes with the table, the contract, the mapping or the key.

        A source without an honest cheap fingerprint (a database query without a declared
        updated-at column) gets a fresh key each time, so its cache is never reused.
        """
        ident = self.source.fingerprint()
        if ident is None:
            ident = ["unfingerprinted", secrets.token_hex(16)]
        text = json.dumps([*ident, self.spec.fingerprint(), self.mapping, self.key_id,
                           CACHE_FORMAT], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def customers(self) -> pd.DataFrame:
        """One row per customer (pseudonymised and aggregated), cached locally."""
        cache = self.state_dir / "cache" / f"customers-{self._cache_key()}.parquet"
        if cache.is_file():
            return pd.read_parquet(cache)
        table = customer_table(self.source.read(text_columns=self._text_columns), self.spec,
                               pseudonymizer=self.pseudonymizer, source=self.source_label)
        _replace_cache(cache, "customers-*.parquet",
                       lambda tmp: table.to_parquet(tmp, index=False))
        return table

    def matrix(self) -> np.ndarray:
        """The partner's scaled customer matrix (float32, memory-mapped from the local cache).

        The cache is built chunk by chunk, so memory does not grow with the data file
        (except under a ``[customers]`` section, whose grouping reads the whole file); it
        is rebuilt when the file, the contract, the mapping, the key or the format changes.
        """
        cache = self.state_dir / "cache" / f"matrix-{self._cache_key()}.npy"
        if not cache.is_file():
            (self.state_dir / "data_quality.json").unlink(missing_ok=True)
            report = _replace_cache(cache, "matrix-*.npy", lambda tmp: write_matrix(
                self._customer_chunks(), self.spec, tmp, mapping=self.mapping,
                source=self.source_label))
            (self.state_dir / "data_quality.json").write_text(
                json.dumps(report.to_dict(), indent=1), encoding="utf-8")
            self._log_quality(report.summary())
        return np.load(cache, mmap_mode="r")

    def _log_quality(self, summary: Mapping[str, Any]) -> None:
        """The partner's own log: its data-quality counts, warned when over a threshold.

        Counts and feature names only: :meth:`DataQualityReport.summary` holds no value.
        """
        counts = (f"Partner {self.name}: data quality: {summary['rows']:,} rows, "
                  f"{summary['customers']:,} customers, {summary['dropped']:,} dropped")
        warnings = summary.get("warnings") or []
        if warnings:
            log.warning("%s. %s (details: data_quality.json in the state folder)", counts,
                        " ".join(warnings))
        else:
            log.info("%s.", counts)

    def _customer_chunks(self) -> Iterator[pd.DataFrame]:
        """The customer table in chunks.

        Streamed from the data file when its rows are customers; sliced from the aggregated
        table when the contract groups rows per customer (grouping needs the whole file).
        """
        if self.spec.customers is not None:
            yield from frame_chunks(self.customers(), self.chunk_rows)
            return
        needed = set(resolve_columns(self.spec, self.mapping).values())
        if self.spec.identity:
            needed |= set(self.spec.identity.columns)
        # and the id column, which pseudonymisation refuses to overwrite
        wanted = needed | ({ID_COLUMN} if self.spec.identity else set())
        for frame in self.source.iter_chunks(chunk_rows=self.chunk_rows, columns=wanted,
                                             text_columns=self._text_columns):
            if not needed <= set(frame.columns):
                # the error names close matches from the table's real header, which
                # reading only the contract's columns hides
                frame = self._first_rows()
            yield customer_table(frame, self.spec, pseudonymizer=self.pseudonymizer,
                                 source=self.source_label)

    def _first_rows(self) -> pd.DataFrame:
        """The table's first rows with every column (for errors naming its real header)."""
        chunks = self.source.iter_chunks(chunk_rows=100, text_columns=self._text_columns)
        try:
            return next(iter(chunks))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:  # a database reader releases its connection now
                close()

    @cached_property
    def _text_columns(self) -> set[str]:
        """Local columns of categorical features: read as written, never as numbers."""
        columns = resolve_columns(self.spec, self.mapping)
        return {columns[f.name] for f in self.spec.features
                if isinstance(f, CategoricalFeature)}

    def design(self, task: ResponseTask) -> DesignData:
        """The partner's design rows for a response model (training and held-out parts)."""
        centers = task.segment_centers if task.segment_centers.size else None
        if centers is not None and centers.shape[1:] != (self.spec.dim,):
            raise ProtocolError(f"Segment centres of shape {centers.shape} do not fit the "
                                f"contract's dimension {self.spec.dim}.")
        return design_data(self.customers(), self.spec, task.target, segment_centers=centers,
                           holdout=task.holdout, seed=task.holdout_seed, mapping=self.mapping,
                           source=self.source_label)

    def rng(self, *, run_id: str, stage: str, round: int, request: np.ndarray
            ) -> np.random.Generator:
        """Release noise: OS entropy, or in simulations a stream seeded per release.

        A simulation's seed mixes the run id, the stage, the round and a digest of the
        request's public parameters (``request``); with each planned release made once (the
        guard refuses a plan listing one twice), no two releases share a noise draw whose
        difference would cancel it.
        """
        if self.config.noise_seed < 0:
            return secure_rng()
        if not self.config.simulation:
            raise ProtocolError("Seeded noise is for simulations only.")
        digest = hashlib.sha256(json.dumps([self.config.noise_seed, self.name, run_id, stage,
                                            round]).encode())
        digest.update(np.ascontiguousarray(request, dtype=np.float64).tobytes())
        return secure_rng(int.from_bytes(digest.digest()[:8], "little"))

    def output_path(self, name: str) -> Path:
        """A file of the partner's output folder; refuses any name that would leave it."""
        folder = Path(self.config.output_dir).resolve()
        path = (folder / name).resolve()
        if path.parent != folder or name in ("", ".", ".."):
            raise ProtocolError("An output file name must not be a path.")
        return path

    def local_paths(self) -> list[tuple[str, str]]:
        """The node's configured local paths as (node-config key, path), as given and resolved.

        A database source is listed too, as given and as shown in errors, with its password
        (when one was read) and its query, so none of them leaves the partner.
        """
        c = self.config
        named = {"data-path": c.data_path, "spec": c.spec, "policy": c.policy,
                 "mapping": c.mapping, "key": c.key, "state-dir": c.state_dir,
                 "output-dir": c.output_dir, "capture-dir": c.capture_dir}
        pairs = [pair for label, path in named.items() if path
                 for pair in ((label, path), (label, str(Path(path).resolve())))]
        if c.data_source:  # a URL holds '/', so it is replaced whole
            shown = self.__dict__.get("source")
            pairs += [("data-source", c.data_source),
                      *([("data-source", shown.label)] if shown is not None else [])]
        return pairs
