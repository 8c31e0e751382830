"""Tests for the speed benchmark: the scaled-up partner files, one real run, table and plot."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fedprofile.sim.bench_speed import (
    SpeedRow,
    plot_speed,
    speed_run,
    speed_table,
    write_partner_files,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"age": [30, 40, 50, 60], "balance": [10.0, -5.0, 300.0, 0.5],
                         "job": ["a", "b", "c", "d"]})


def test_scaled_partner_files_are_written_in_chunks_with_jittered_real_rows(tmp_path) -> None:
    # Execute
    files = write_partner_files(_frame(), tmp_path, partners=3, customers=1003,
                                numeric=["age", "balance"], seed=0, chunk_rows=100)

    # Assert: sizes split evenly, written as chunk-sized row groups
    sizes = [pq.ParquetFile(f.path).metadata.num_rows for f in files]
    assert sizes == [335, 334, 334]
    assert pq.ParquetFile(files[0].path).metadata.num_row_groups == 4
    rows = pd.concat([pd.read_parquet(f.path) for f in files], ignore_index=True)
    # categorical values are real ones; numbers are real ones times N(1, 0.05^2)
    assert set(rows["job"]) == {"a", "b", "c", "d"}
    source = _frame().set_index("job")
    ratio = rows["balance"].to_numpy() / source.loc[rows["job"], "balance"].to_numpy()
    assert ratio.min() > 0.8 and ratio.max() < 1.2 and 0.03 < ratio.std() < 0.07
    assert np.array_equal(rows["age"], np.round(rows["age"]))      # integers stay integers
    again = write_partner_files(_frame(), tmp_path / "again", partners=3, customers=1003,
                                numeric=["age", "balance"], seed=0, chunk_rows=100)
    pd.testing.assert_frame_equal(pd.read_parquet(again[2].path), pd.read_parquet(files[2].path))


def test_shipped_size_is_an_iid_split_of_the_frame(tmp_path) -> None:
    files = write_partner_files(_frame(), tmp_path, partners=2, customers=0, numeric=["age"],
                                seed=0)
    rows = pd.concat([pd.read_parquet(f.path) for f in files])
    assert sorted(rows["job"]) == ["a", "b", "c", "d"]


def test_one_speed_run_times_every_stage_on_flower_and_in_process() -> None:
    # Execute: 2 partners, 20,000 scaled-up customers of the bank data
    row = speed_run(dataset="bank", partners=2, customers=20_000, k=3, workers=1)

    # Assert: the private start and the 12 Lloyd rounds planned at epsilon = 1 for 2
    # partners, each timed; the whole protocol in both
    assert (row.customers, row.workers, len(row.rounds_s)) == (20_000, 1, 13)
    assert row.flower_build_s > 0 and row.inprocess_build_s > 0
    assert row.inprocess_s == pytest.approx(row.inprocess_build_s + row.inprocess_rounds_s)
    assert row.flower_s > sum(row.rounds_s) + row.flower_build_s
    # one reply holds k x d noised sums and k counts (d = 41 for bank), not customers
    assert 3 * 41 * 8 < row.bytes_per_partner_round < 20_000
    assert row.peak_rss_mb > 100


def _row(partners: int, customers: int, flower: float) -> SpeedRow:
    return SpeedRow(partners=partners, customers=customers, workers=2, noise="partner",
                    flower_s=flower,
                    inprocess_s=2.0,
                    flower_build_s=1.0, inprocess_build_s=1.5, rounds_s=[0.5, 0.5],
                    inprocess_rounds_s=0.5, bytes_per_partner_round=1000.0, peak_rss_mb=2048.0)


def test_speed_table_and_plot(tmp_path) -> None:
    rows = [_row(10, 45_211, 15.0), _row(10, 1_000_000, 30.0), _row(5, 45_211, 14.0)]

    rows[2] = replace(rows[2], rounds_s=[0.9, 0.2, 0.4, 0.3])

    table = speed_table(rows)
    assert table.splitlines()[2].startswith(
        "| 10 | 45,211 | partner | 2 | 15.0 | 2.0 | 7.50 | 1.0 / 1.5 | 0.50 0.50 | 0.50 |")
    assert "| 0.90 0.20 0.40 0.30 | 0.30 |" in table.splitlines()[4]
    assert len(table.splitlines()) == 5

    path = plot_speed(rows, tmp_path / "speed.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="two or more"):
        plot_speed(rows[:1], tmp_path / "one.png")


def test_partners_given_as_files_cannot_be_evaluated_centrally(tmp_path) -> None:
    from fedprofile.errors import ContractError
    from fedprofile.presets.datasets import load_preset
    from fedprofile.sim.runner import simulate

    files = write_partner_files(_frame(), tmp_path, partners=2, customers=0, numeric=["age"],
                                seed=0)
    with pytest.raises(ContractError, match="evaluate=False for partners given as files"):
        simulate(files, spec_path=load_preset("bank").spec_path, out_dir=tmp_path / "out",
                 state_dir=tmp_path / "state", run_config={"k": 2}, evaluate=True)
    assert not (tmp_path / "state").exists()


def test_too_few_customers_for_the_partners_is_a_clear_error(tmp_path) -> None:
    from fedprofile.errors import ContractError

    with pytest.raises(ContractError, match="cannot be split over 10 partners"):
        write_partner_files(_frame(), tmp_path, partners=10, customers=5, numeric=["age"],
                            seed=0)
