"""Tests of the utility benchmark: partner splits, baselines, tables, plots and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from typer.testing import CliRunner

from fedprofile.cli.commands import app
from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import load_spec
from fedprofile.presets.datasets import load_preset
from fedprofile.sim.bench import (
    INITS,
    Centralized,
    bench_partitions,
    kmeans_baselines,
    kmeans_utility,
)
from fedprofile.sim.evaluate import kmeans_cost

runner = CliRunner()


def test_every_init_of_the_kmeans_stage_is_benchmarked() -> None:
    assert INITS == ("overcluster", "random")


@pytest.mark.parametrize(("dataset", "n", "names"), [
    ("retail", 5, ["UK-3", "UK-2", "UK-1", "Rest of world", "Germany+France"]),
    ("retail", 10, ["UK-3/1/1", "UK-3/1/2", "UK-3/2", "UK-2/1", "UK-2/2", "UK-1/1", "UK-1/2",
                    "Rest of world", "Germany", "France"]),
])
def test_partners_beyond_the_column_values_are_halves_of_the_largest(dataset, n, names) -> None:
    preset = load_preset(dataset)
    parts = bench_partitions(preset, n)
    assert [p.name for p in parts] == names
    index = pd.Index(np.concatenate([p.frame.index.to_numpy() for p in parts]))
    assert index.is_unique and len(index) == len(preset.frame)
    assert bench_partitions(preset, n)[0].frame.index.equals(parts[0].frame.index)


def test_noise_free_federation_matches_centralized_kmeans_on_bank() -> None:
    preset = load_preset("bank")
    spec = load_spec(preset.spec_path)
    mats = [transform_frame(p.frame, spec, source=p.name).matrix for p in preset.partitions()]
    pooled = np.vstack(mats)
    fit = KMeans(n_clusters=6, n_init=3, random_state=0).fit(pooled)
    reference = Centralized(fit.cluster_centers_, kmeans_cost(pooled, fit.cluster_centers_))
    (row,) = kmeans_utility(mats, spec, k=6, inits=["overcluster"], epsilons=[math.inf],
                            seeds=1, reference=reference)
    assert (row.init, row.partners, row.epsilon, row.seeds) == ("overcluster", 5, math.inf, 1)
    assert abs(row.ratio_mean - 1.0) < 0.05
    assert row.ari_mean > 0.5


def test_matched_averaging_recovers_shuffled_local_centres() -> None:
    rng = np.random.default_rng(0)
    blobs = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    data = np.vstack([c + 0.1 * rng.standard_normal((300, 2)) for c in blobs])
    mats = [data[rng.permutation(len(data))[:450]], data[rng.permutation(len(data))[:450]]]
    base = kmeans_baselines(mats, k=3, seed=0)
    assert base.partners == 2
    assert base.averaged_local_centres == pytest.approx(1.0, abs=0.02)
    assert base.partners_alone_worst == pytest.approx(1.0, abs=0.02)
    assert base.averaged_index_aligned >= base.averaged_local_centres


def test_cli_rows_for_every_init_partners_and_epsilon_and_a_png(tmp_path: Path) -> None:
    plot = tmp_path / "plots" / "retail.png"
    result = runner.invoke(app, ["bench", "utility", "--dataset", "retail", "--k", "4",
                                 "--seeds", "1", "--partners", "2,3", "--epsilons", "1,inf",
                                 "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1:4] for line in result.output.splitlines()
            if line.startswith(("| overcluster", "| random"))]
    cells = {tuple(c.strip() for c in row) for row in rows}
    assert cells == {(i, p, e) for i in INITS for p in ("2", "3") for e in ("1", "inf")}
    assert len(rows) == 8
    baselines = [line for line in result.output.splitlines() if line.startswith(("| 2 |", "| 3 |"))]
    assert len(baselines) == 2
    data = plot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_cli_response_rows_per_partner_count(tmp_path: Path) -> None:
    plot = tmp_path / "ridge.png"
    result = runner.invoke(app, ["bench", "utility", "--dataset", "retail-holdout", "--task",
                                 "ridge", "--target", "future_spend", "--seeds", "1",
                                 "--partners", "3,5", "--epsilons", "inf", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in result.output.splitlines()
            if line.startswith(("| 3 |", "| 5 |"))]
    assert [r[:2] for r in rows] == [["3", "inf"], ["5", "inf"]]
    for row in rows:
        assert abs(float(row[4])) < 0.01  # no noise: the federated ridge is the centralized one
    assert plot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(("args", "message"), [
    (["--init", "kmeans++"], "--init must be a comma-separated list of overcluster, random"),
    (["--init", "random,"], "--init must be a comma-separated list without empty items"),
    (["--partners", "5,x"], "--partners must be comma-separated integers"),
    (["--partners", "0"], "--partners must be comma-separated integers"),
    (["--epsilons", "1,-2"], "--epsilons must be comma-separated positive numbers"),
    (["--task", "lasso"], "--task must be segments, ridge or logistic"),
    (["--task", "ridge"], "Give --task ridge|logistic and a --target"),
    (["--dataset", "retail", "--partners", "5000"], "must be comma-separated integers"),
], ids=["unknown-init", "empty-init", "non-integer-partners", "zero-partners",
        "negative-epsilon", "unknown-task", "ridge-without-target", "over-the-cli-limit"])
def test_bad_bench_options_exit_2_with_one_line(args, message) -> None:
    result = runner.invoke(app, ["bench", "utility", "--seeds", "1", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_unwritable_plot_path_is_refused_before_the_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = runner.invoke(app, ["bench", "utility", "--dataset", "retail", "--k", "2",
                                 "--seeds", "1", "--partners", "2", "--epsilons", "inf",
                                 "--init", "random", "--plot", str(blocker / "x.png")])
    assert result.exit_code == 2
    assert "Cannot write the plot" in " ".join(result.output.split())
    assert "| random" not in result.output  # refused before any run
    assert "Traceback" not in result.output


def test_partners_too_small_for_k_exit_2_before_the_sweep() -> None:
    result = runner.invoke(app, ["bench", "utility", "--seeds", "1", "--epsilons", "inf",
                                 "--dataset", "retail", "--partners", "1000", "--k", "6"])
    assert result.exit_code == 2, result.output
    assert "no partner has 6 customers" in " ".join(result.output.split())
    assert "| overcluster" not in result.output and "Traceback" not in result.output
