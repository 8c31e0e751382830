"""The coordinator's secure k-means rounds when partners vanish, over the real wire records.

A federation stand-in routes each record to the partners' own handlers in process (encode,
handle, decode), as Flower would; a partner can vanish from a chosen message on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import RecordDict

from fedprofile.client.app import kmeans, profile
from fedprofile.client.secure import (
    Masked,
    secagg_agree,
    secagg_confirm,
    secagg_keys,
    secagg_unmask,
    trust_each_other,
)
from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.privacy.ledger import Ledger
from fedprofile.privacy.secagg.messages import ConfirmRequest, KeyBroadcast, UnmaskRequest
from fedprofile.protocol import KMeansRequest, ProfileRequest
from fedprofile.protocol.secagg import SecaggSetup, decode, encode
from fedprofile.server.federation import Federation, RunAborted
from fedprofile.server.kmeans import KMeansStage, plan_kmeans
from fedprofile.server.secure import unmask_askees
from fedprofile.server.session import RunSession, drive

SPEC = """
[features.age]
kind = "numeric"
bounds = [18, 95]

[features.color]
kind = "categorical"
categories = ["red", "blue"]
other = true
"""
POLICY = "max_epsilon_per_run = inf\ntotal_epsilon = inf\nallow_non_private = true\n"
ROWS = (300, 350, 400, 450)


def _kmeans(content: RecordDict, site: PartnerSite) -> RecordDict:
    masked = Masked.parser(KMeansRequest)(content)
    return kmeans(masked.request, site, masked.mask).to_record()


HANDLERS = {
    "query.secagg_keys": lambda c, s: encode(secagg_keys(decode(SecaggSetup, c), s)),
    "query.secagg_agree": lambda c, s: encode(secagg_agree(decode(KeyBroadcast, c), s)),
    "query.secagg_confirm": lambda c, s: encode(secagg_confirm(decode(ConfirmRequest, c), s)),
    "query.secagg_unmask": lambda c, s: encode(secagg_unmask(decode(UnmaskRequest, c), s)),
    "train.kmeans": _kmeans,
}


class LocalFederation(Federation):
    """Delivers each record to a partner's handler; ``vanish`` maps a node to (message, n)."""

    def __init__(self, sites: list[PartnerSite], vanish: dict[int, tuple[str, int]]) -> None:
        super().__init__(grid=None, node_ids=list(range(len(sites))),  # type: ignore[arg-type]
                         min_partners=2, timeout=1.0)
        self.sites, self.vanish, self.seen = sites, vanish, {}
        self.unmask_calls: list[list[int]] = []
        self.names = {i: s.name for i, s in enumerate(sites)}

    def send(self, message_type: str, contents: Any, decode: Any, *,
             others_stay: bool = False) -> dict[int, Any]:
        out = {}
        if message_type == "query.secagg_unmask":
            self.unmask_calls.append(sorted(contents))
        for node in list(self.node_ids):
            if node not in contents and others_stay:
                continue
            count = self.seen[node, message_type] = self.seen.get((node, message_type), 0) + 1
            if node not in contents or self.vanish.get(node, ("", 0)) == (message_type, count):
                self._drop(node, f"did not answer {message_type}")
                continue
            out[node] = decode(HANDLERS[message_type](contents[node].copy(), self.sites[node]))
        self.check_quorum(message_type)
        return out


def _run(tmp_path: Path, vanish: dict[int, tuple[str, int]]) -> tuple[Any, RunSession]:
    (tmp_path / "spec.toml").write_text(SPEC)
    sites = []
    for i, rows in enumerate(ROWS):
        folder = tmp_path / f"p{i}"
        folder.mkdir()
        pd.DataFrame({"age": (np.arange(rows) * (i + 3)) % 70 + 20,
                      "color": ["red" if j % (i + 2) else "blue" for j in range(rows)]}
                     ).to_csv(folder / "data.csv", index=False)
        (folder / "policy.toml").write_text(POLICY)
        sites.append(PartnerSite(NodeConfig(
            data_path=str(folder / "data.csv"), spec=str(tmp_path / "spec.toml"),
            partner_name=f"p{i}", state_dir=str(folder / "state"),
            policy=str(folder / "policy.toml"))))
    trust_each_other({s.name: s.state_dir for s in sites})
    spec = sites[0].spec
    plan = plan_kmeans(epsilon=math.inf, delta=1e-6, lloyd_rounds=2, norm_bound=spec.norm_bound)
    for site in sites:
        profile(ProfileRequest(run_id="run1", spec_fingerprint=spec.fingerprint(),
                               epsilon_target=math.inf, delta=1e-6, stages=("kmeans",),
                               planned_events=plan.events(), min_segment_size=50, k=2), site)
    session = RunSession(run_id="run1", fed=LocalFederation(sites, vanish),
                         ledger=Ledger(tmp_path / "federation.sqlite"), delta=1e-6,
                         noise="secagg", dropouts=1, norm_bound=spec.norm_bound)
    stage = KMeansStage(spec=spec, plan=plan, k=2, n_partners=4, run_id="run1",
                        fingerprint=spec.fingerprint(), candidates=12, seed=0)
    result = drive(session, stage, secure_dim=12 * (spec.dim + 1), stage_name="kmeans")
    return result, session


def test_rounds_ask_threshold_survivors_to_unmask_in_turn_and_the_last_asks_all(
        tmp_path: Path) -> None:
    # Execute: nobody vanishes; 4 partners, threshold 3, three rounds
    result, session = _run(tmp_path, {})

    # Assert: 3 partners asked in turn, then all 4 in the stage's last round, after which
    # no partner keeps its secrets of the stage
    fed = session.fed
    assert isinstance(fed, LocalFederation)
    assert fed.unmask_calls == [[0, 1, 2], [0, 1, 3], [0, 1, 2, 3]]
    for site in fed.sites:
        assert not [p.name for p in (site.state_dir / "secagg").glob("*.json")
                    if p.name != "partners.json"]
    notes = [json.loads(n["message"]) for n in session.ledger.notes() if n["kind"] == "secagg"]
    assert [len(n["summed"]) for n in notes] == [4, 4, 4]
    assert result.sizes.sum() == pytest.approx(sum(ROWS), abs=1e-3)


def test_unmask_askees_rotate_and_cover_small_rounds() -> None:
    names = [f"p{i}" for i in range(5)]
    assert unmask_askees(names, 3, 0) == ["p0", "p1", "p2"]
    assert unmask_askees(names, 3, 1) == ["p3", "p4", "p0"]
    assert unmask_askees(names[:3], 3, 7) == names[:3]


def test_a_partner_that_vanishes_after_masking_does_not_stop_the_run(tmp_path: Path) -> None:
    # Execute: p0 sends its masked vector of the first round, then never answers again
    result, session = _run(tmp_path, {0: ("query.secagg_unmask", 1)})

    # Assert: p0 was asked to unmask first, and p3, not asked at first, was asked in its
    # place; every round is released; the first sums all four, the later ones three
    fed = session.fed
    assert isinstance(fed, LocalFederation)
    assert fed.unmask_calls[:2] == [[0, 1, 2], [3]]
    notes = [json.loads(n["message"]) for n in session.ledger.notes() if n["kind"] == "secagg"]
    assert [len(n["summed"]) for n in notes] == [4, 3, 3]
    assert [n["releases"][1]["shares_present"] for n in notes] == [4, 3, 3]
    assert session.fed.summary()["dropped"] == {"p0": "did not answer query.secagg_unmask"}
    assert len(result.history) == 3
    assert result.sizes.sum() == pytest.approx(sum(ROWS[1:]), abs=1e-3)


def test_a_second_dropout_beyond_the_plan_stops_the_run_unreleased(tmp_path: Path) -> None:
    # Execute / Assert: with t = 1, a second partner vanishing leaves 2 < m - t = 3
    with pytest.raises(RunAborted, match="nothing is released") as info:
        _run(tmp_path, {3: ("query.secagg_unmask", 1), 2: ("train.kmeans", 2)})
    assert "p2" in str(info.value) and "p3" in str(info.value)
