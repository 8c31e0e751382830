"""The simulation's preflight refuses a run a partner's budget cannot pay, before Flower."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedprofile.client.site import PartnerSite
from fedprofile.config import RunConfig
from fedprofile.errors import DataError
from fedprofile.presets.partition import Partition
from fedprofile.privacy.ledger import Ledger
from fedprofile.server.kmeans import plan_kmeans
from fedprofile.sim.runner import _prepare_partners, preflight

SPEC = """
[features.age]
kind = "numeric"
bounds = [18, 95]
"""


def test_a_run_beyond_the_budget_left_is_refused_once_for_all_partners(tmp_path: Path) -> None:
    # Prepare: three partners under total_epsilon = 1.2, each with a past run of epsilon = 1
    spec, policy = tmp_path / "spec.toml", tmp_path / "policy.toml"
    spec.write_text(SPEC)
    policy.write_text("max_epsilon_per_run = 1.0\ntotal_epsilon = 1.2\n")
    parts = [Partition(name=f"p{i}", frame=pd.DataFrame({"age": np.arange(300) % 70 + 20}))
             for i in range(3)]
    nodes = _prepare_partners(parts, spec_path=spec, state_dir=tmp_path / "state",
                              policy=policy, seed=0, capture=None)
    past = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=3, norm_bound=1.0).events()
    for pid in nodes:
        site = PartnerSite.from_node_config({"partition-id": pid}, nodes)
        with Ledger(site.state_dir / "ledger.sqlite") as book:
            book.record(run_id="past", party=site.name, events=past, delta=1e-6)
    cfg = RunConfig.from_mapping({"spec": str(spec), "k": 2, "epsilon": 1.0})
    # Execute
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        preflight(nodes, cfg)
    seconds = time.perf_counter() - start
    # Assert: one line naming the budget left and the epsilon asked, for all partners
    text = str(info.value)
    assert "all 3 partners: its privacy budget leaves at most epsilon = 0." in text
    assert "this run requests epsilon = 1." in text and "p0" not in text
    assert seconds < 10
    small = RunConfig.from_mapping({"spec": str(spec), "k": 2, "epsilon": 0.2})
    assert preflight(nodes, small) == 900  # what is left still runs


def _partners(tmp_path: Path, sizes: list[int]) -> dict:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    parts = [Partition(name=f"p{i}", frame=pd.DataFrame({"age": np.arange(n) % 70 + 20}))
             for i, n in enumerate(sizes)]
    return _prepare_partners(parts, spec_path=spec, state_dir=tmp_path / "state", policy=None,
                             seed=0, capture=None)


def test_a_partner_too_small_for_k_leaves_and_the_run_goes_on(tmp_path: Path, caplog) -> None:
    # as in a deployment, where such a partner refuses query.profile and is dropped
    nodes = _partners(tmp_path, [300, 300, 80])
    cfg = RunConfig.from_mapping({"spec": str(tmp_path / "spec.toml"), "k": 2,
                                  "epsilon": 1.0, "min-partners": 2})

    with caplog.at_level("WARNING", logger="fedprofile.sim"):
        pooled = preflight(nodes, cfg)

    assert pooled == 600  # the customers of the partners that stay
    assert "Leaving the run at query.profile: p2: k=2 segments" in caplog.text
    assert "The run goes on with 2 partners" in caplog.text


def test_too_few_partners_left_for_k_stops_the_run_before_flower(tmp_path: Path) -> None:
    nodes = _partners(tmp_path, [300, 80, 80])
    cfg = RunConfig.from_mapping({"spec": str(tmp_path / "spec.toml"), "k": 2,
                                  "epsilon": 1.0, "min-partners": 2})

    with pytest.raises(DataError, match="cannot serve this run; nothing was released: 2 "
                                        r"partners \(p1, p2\): k=2 segments"):
        preflight(nodes, cfg)
