"""Partner tables read from SQLite, DuckDB, PostgreSQL and Parquet folders, as from CSV."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.contract.parser import load_spec
from fedprofile.io.sources import FileSource, ParquetDirSource, SqlSource, open_source
from fedprofile.io.sql import PASSWORD_ENV
from fedprofile.io.tables import write_table
from fedprofile.presets.datasets import load_preset
from fedprofile.protocol import ResponseTask
from fedprofile.sim.inprocess import run_kmeans_inprocess, run_response_inprocess

ROWS = 900
PARTNERS = ("north", "south", "west")
ENGINES = ("sqlite", "duckdb", "parquet-dir", "postgresql")


@pytest.fixture(scope="module")
def bank() -> tuple[pd.DataFrame, Path]:
    """A slice of the shipped bank data with a partner column and a row number."""
    preset = load_preset("bank")
    frame = preset.frame.iloc[:ROWS].reset_index(drop=True)
    frame = frame.assign(partner=[PARTNERS[i % 3] for i in range(ROWS)],
                         row_no=np.arange(ROWS))
    return frame, preset.spec_path


def _load_sql(url: str, frame: pd.DataFrame, table: str = "customers") -> None:
    engine = sa.create_engine(url)
    try:
        frame.to_sql(table, engine, index=False, if_exists="replace", chunksize=500)
    finally:
        engine.dispose()


def _source(engine: str, frame: pd.DataFrame, root: Path, request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch) -> str:
    """Write ``frame`` to ``engine``; the location a partner gives to read it."""
    root.mkdir(parents=True, exist_ok=True)
    if engine == "sqlite":
        _load_sql(f"sqlite:///{root / 'crm.db'}", frame)
        return f"sqlite:///{root / 'crm.db'}"
    if engine == "duckdb":
        import duckdb

        with duckdb.connect(str(root / "crm.duckdb")) as con:
            con.register("frame", frame)
            con.execute("CREATE TABLE customers AS SELECT * FROM frame")
        return f"duckdb:///{root / 'crm.duckdb'}"
    if engine == "parquet-dir":
        folder = root / "customers"
        for i, start in enumerate(range(0, len(frame), 250)):
            write_table(frame.iloc[start:start + 250], folder / f"part-{i}.parquet")
        return str(folder)
    server = request.getfixturevalue("postgres")
    name = "t_" + re.sub(r"\W", "_", root.parent.name.lower())
    _load_sql(server.admin_url(), frame, table=name)
    monkeypatch.setenv(PASSWORD_ENV, server.password)
    return server.url() + f"#{name}"


def _node(location: str, query: str, state: Path, spec: Path, **extra: str) -> PartnerSite:
    if "#" in location:  # a PostgreSQL table of its own per test
        location, table = location.split("#")
        query = query.replace("customers", table)
    key = "data-source" if query else "data-path"
    cfg = {key: location, "data-query": query, "spec": str(spec), "partner-name": "p",
           "state-dir": str(state), **extra}
    site = PartnerSite(NodeConfig.from_mapping(cfg))
    site.chunk_rows = 128
    return site


def _query(engine: str, where: str = "") -> str:
    if engine == "parquet-dir":
        return ""
    return f"SELECT * FROM customers {where} ORDER BY row_no"


@pytest.mark.parametrize("engine", ENGINES)
def test_matrix_and_quality_counts_equal_those_read_from_csv(
        engine, bank, tmp_path, request, monkeypatch) -> None:
    # Prepare: the same rows as CSV and in the engine
    frame, spec = bank
    csv = write_table(frame, tmp_path / "customers.csv")
    location = _source(engine, frame, tmp_path / "db", request, monkeypatch)
    from_csv = _node(str(csv), "", tmp_path / "csv-state", spec)

    # Execute
    site = _node(location, _query(engine), tmp_path / "state", spec)
    matrix = site.matrix()

    # Assert: the same float32 rows in the same order, the same data-quality counts
    expected = from_csv.matrix()
    assert isinstance(matrix, np.memmap)
    assert matrix.shape == expected.shape == (ROWS, load_spec(spec).dim)
    np.testing.assert_array_equal(matrix, expected)
    assert (tmp_path / "state" / "data_quality.json").read_text() == \
        (tmp_path / "csv-state" / "data_quality.json").read_text()


@pytest.mark.parametrize("engine", ENGINES)
def test_federated_segments_equal_csv_partners_at_eps_inf_and_seeded_eps_1(
        engine, bank, tmp_path, request, monkeypatch) -> None:
    # Prepare: three partners, each reading its own rows (a WHERE clause, or a file each)
    frame, spec_path = bank
    spec = load_spec(spec_path)
    csv_matrices, matrices = [], []
    for name in PARTNERS:
        rows = frame[frame.partner == name]
        csv = write_table(rows, tmp_path / name / "customers.csv")
        csv_matrices.append(_node(str(csv), "", tmp_path / name / "csv-state", spec_path)
                            .matrix())
    location = (None if engine == "parquet-dir"
                else _source(engine, frame, tmp_path / "db", request, monkeypatch))
    for name in PARTNERS:
        if engine == "parquet-dir":
            location = _source(engine, frame[frame.partner == name], tmp_path / name / "pq",
                               request, monkeypatch)
        assert location is not None
        query = _query(engine, f"WHERE partner = '{name}'")
        matrices.append(_node(location, query, tmp_path / name / "state", spec_path).matrix())

    # Execute / Assert: exact at epsilon = inf, and the same noise with the same seed at 1
    for epsilon, noise_seed in ((float("inf"), None), (1.0, 7)):
        ours = run_kmeans_inprocess(matrices, spec, k=4, epsilon=epsilon, seed=0,
                                    noise_seed=noise_seed)
        theirs = run_kmeans_inprocess(csv_matrices, spec, k=4, epsilon=epsilon, seed=0,
                                      noise_seed=noise_seed)
        np.testing.assert_array_equal(ours.centers, theirs.centers)


def test_open_source_tells_files_folders_and_databases_apart(tmp_path) -> None:
    # Prepare
    (tmp_path / "folder").mkdir()

    # Execute / Assert
    assert isinstance(open_source(tmp_path / "x.csv"), FileSource)
    assert isinstance(open_source(tmp_path / "folder"), ParquetDirSource)
    assert isinstance(open_source("sqlite:///x.db", "customers"), SqlSource)
    with pytest.raises(Exception, match="is a path, not a database URL"):
        open_source(tmp_path / "x.csv", "SELECT 1")
    with pytest.raises(Exception, match="needs a data query"):
        open_source("sqlite:///x.db")


def test_node_config_keeps_data_path_and_refuses_both_keys(tmp_path) -> None:
    # Execute / Assert
    assert NodeConfig.from_mapping({"data-path": "a.csv"}).data_location == "a.csv"
    cfg = NodeConfig.from_mapping({"data-source": "sqlite:///a.db", "data-query": "t"})
    assert cfg.data_location == "sqlite:///a.db" and cfg.data_query == "t"
    with pytest.raises(Exception, match="not both"):
        NodeConfig.from_mapping({"data-path": "a.csv", "data-source": "b.csv"})


def test_parquet_folder_with_hive_partitions_reads_the_partition_column(tmp_path, bank) -> None:
    # Prepare
    frame, _ = bank
    for name in PARTNERS:
        part = frame[frame.partner == name].drop(columns=["partner"])
        write_table(part, tmp_path / "ds" / f"partner={name}" / "part-0.parquet")

    # Execute
    read = open_source(tmp_path / "ds").read()

    # Assert
    assert len(read) == ROWS and sorted(read["partner"].unique()) == sorted(PARTNERS)
    assert not isinstance(read["partner"].dtype, pd.CategoricalDtype)


@pytest.mark.parametrize("engine", ENGINES)
def test_bank_pipeline_at_eps_1_equals_the_csv_partners_with_the_same_seed(
        engine, bank, tmp_path, request, monkeypatch) -> None:
    # Prepare: three partners per side, each reading its own rows
    frame, spec_path = bank
    spec = load_spec(spec_path)
    csv_sites, sites = [], []
    location = (None if engine == "parquet-dir"
                else _source(engine, frame, tmp_path / "db", request, monkeypatch))
    for name in PARTNERS:
        rows = frame[frame.partner == name]
        csv = write_table(rows, tmp_path / name / "customers.csv")
        csv_sites.append(_node(str(csv), "", tmp_path / name / "csv-state", spec_path))
        if engine == "parquet-dir":
            location = _source(engine, rows, tmp_path / name / "pq", request, monkeypatch)
        assert location is not None
        sites.append(_node(location, _query(engine, f"WHERE partner = '{name}'"),
                           tmp_path / name / "state", spec_path))

    # Execute: the pipeline's two learning stages at epsilon = 1 with seeded noise: private
    # segments, then a segment-aware logistic model of y on each partner's design rows
    def pipeline(partners: list[PartnerSite]) -> tuple[np.ndarray, np.ndarray]:
        segments = run_kmeans_inprocess([s.matrix() for s in partners], spec, k=4,
                                        epsilon=1.0, seed=0, noise_seed=7)
        task = ResponseTask(run_id="r", spec_fingerprint=spec.fingerprint(), stage="logistic",
                            round=0, target="y", holdout=0.2, holdout_seed=0,
                            segment_centers=segments.centers)
        designs = [s.design(task) for s in partners]
        model = run_response_inprocess(designs, task="logistic", epsilon=1.0,
                                       norm_bound=float(np.sqrt(spec.norm_bound**2 + 2)),
                                       target_bound=1.0, noise_seed=7)
        return segments.centers, model.coef

    ours, theirs = pipeline(sites), pipeline(csv_sites)

    # Assert: the same noisy segments and the same noisy response model, bit for bit
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])
    assert np.isfinite(ours[1]).all() and np.abs(ours[1]).sum() > 0
