"""Calibration of secure sums made by the Flower apps' own code, on real wire messages.

Every message is a Flower ``Message`` serialised to protobuf bytes and parsed back, in both
directions; the partners' side is the real :class:`flwr.clientapp.ClientApp`
(:func:`fedprofile.client.app.build_client_app`, hence :mod:`fedprofile.client.secure`) and the
coordinator's is :class:`fedprofile.server.secure.SecureAggregation`. Only the transport is
in process: a full Flower simulation per draw would be far too slow for the thousands of
values a 5 % calibration needs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto

from fedprofile.client.app import build_client_app
from fedprofile.client.secure import trust_each_other
from fedprofile.client.site import PartnerSite
from fedprofile.client.statistics import cluster_partials
from fedprofile.protocol import KMeansRequest, ProfileReply, ProfileRequest
from fedprofile.protocol.secagg import secure_sum_for
from fedprofile.server.federation import Federation
from fedprofile.server.kmeans import plan_kmeans
from fedprofile.server.secure import SecureAggregation

SPEC = """
[features.age]
kind = "numeric"
bounds = [18, 95]

[features.color]
kind = "categorical"
categories = ["red", "blue"]
other = true
"""
POLICY = "max_epsilon_per_run = inf\ntotal_epsilon = inf\n"
ROWS = (300, 350, 400, 450)
CENTRES = 800  # 800 x (dim + 1) = 4,000 noised values per secure sum


pytestmark = pytest.mark.usefixtures("server_task")


def _over_the_wire(message: Message) -> Message:
    return message_from_proto(message_to_proto(message))


class WireFederation(Federation):
    """Sends each record as a serialised Flower message to the partner's ClientApp.

    ``vanish`` names partners that stop answering ``train.kmeans`` (they leave the run).
    """

    def __init__(self, defaults: dict[int, dict[str, Any]], vanish: set[int]) -> None:
        super().__init__(grid=None, node_ids=sorted(defaults),  # type: ignore[arg-type]
                         min_partners=2, timeout=1.0)
        self.app, self.vanish = build_client_app(defaults), vanish
        self.names = {i: str(d["partner-name"]) for i, d in defaults.items()}
        self.contexts = {i: Context(run_id=1, node_id=i, node_config={"partition-id": i},
                                    state=RecordDict(), run_config={}) for i in defaults}

    def send(self, message_type: str, contents: Any, decode: Any, *,
             others_stay: bool = False) -> dict[int, Any]:
        out = {}
        for node in list(self.node_ids):
            if node not in contents and others_stay:
                continue
            if node not in contents or (node in self.vanish and message_type == "train.kmeans"):
                self._drop(node, f"did not answer {message_type}")
                continue
            request = _over_the_wire(Message(content=contents[node].copy(),
                                              message_type=message_type, dst_node_id=node))
            reply = _over_the_wire(self.app(request, self.contexts[node]))
            assert not reply.has_error(), reply.error.reason
            out[node] = decode(reply.content)
        self.check_quorum(message_type)
        return out


def _partners(tmp_path: Path) -> dict[int, dict[str, Any]]:
    (tmp_path / "spec.toml").write_text(SPEC)
    defaults = {}
    for i, rows in enumerate(ROWS):
        folder = tmp_path / f"p{i}"
        folder.mkdir()
        pd.DataFrame({"age": (np.arange(rows) * (i + 3)) % 70 + 20,
                      "color": ["red" if j % (i + 2) else "blue" for j in range(rows)]}
                     ).to_csv(folder / "data.csv", index=False)
        (folder / "policy.toml").write_text(POLICY)
        defaults[i] = {"data-path": str(folder / "data.csv"), "spec": str(tmp_path / "spec.toml"),
                       "partner-name": f"p{i}", "state-dir": str(folder / "state"),
                       "policy": str(folder / "policy.toml"), "noise-seed": 11 + i}
    trust_each_other({d["partner-name"]: Path(d["state-dir"]) for d in defaults.values()})
    return defaults


@pytest.mark.parametrize(("dropouts", "vanish"), [(0, set()), (1, {3})],
                         ids=["t0-all-present", "t1-one-vanished"])
def test_secure_sum_noise_has_the_planned_guaranteed_sd(tmp_path: Path, dropouts: int,
                                                        vanish: set[int]) -> None:
    # Prepare: 4 partners behind their ClientApp; a private k-means plan of several rounds
    defaults = _partners(tmp_path)
    sites = {i: PartnerSite.from_node_config({"partition-id": i}, defaults) for i in defaults}
    spec = sites[0].spec
    plan = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=6, norm_bound=spec.norm_bound)
    fed = WireFederation(defaults, vanish)
    fed.broadcast("query.profile", ProfileRequest(
        run_id="calib", spec_fingerprint=spec.fingerprint(), epsilon_target=1.0, delta=1e-6,
        stages=("kmeans",), planned_events=plan.events(), min_segment_size=50,
        k=2).to_record(), ProfileReply.from_record)
    secure = SecureAggregation(fed, "calib", "kmeans", CENTRES * (spec.dim + 1), dropouts)
    centers = np.random.default_rng(0).uniform(-0.5, 0.5, (CENTRES, spec.dim))

    # Execute: every planned round is one secure sum; its noise is the release minus the
    # exact sum of the partners whose masked vectors are in it, in units of the plan's sd
    standardised: dict[str, list[np.ndarray]] = {"sums": [], "counts": []}
    planned, gaussian = [], []
    for rnd in plan.rounds:
        request = KMeansRequest(run_id="calib", spec_fingerprint=spec.fingerprint(),
                                stage=rnd.stage, round=rnd.round, centers=centers,
                                sum_noise_multiplier=rnd.sum_noise_multiplier,
                                count_noise_multiplier=rnd.count_noise_multiplier)
        parts = secure_sum_for(request, norm_bound=spec.norm_bound)
        released, _ = secure.release(request.to_record(), request.message_type, parts)
        exact = [cluster_partials(sites[n].matrix(), centers) for n in secure.survivors]
        assert len(secure.survivors) == len(ROWS) - dropouts  # the guaranteed shares only
        plans = parts.plans(secure.partners, secure.dropouts)
        for j, name in enumerate(("sums", "counts")):
            noise = released[j] - np.sum([e[j] for e in exact], axis=0).ravel()
            standardised[name].append(noise / plans[j].noise_sd)
        planned.append(plans[0].noise_sd)
        gaussian.append(rnd.sum_noise_multiplier * spec.norm_bound)

    # Assert: the empirical sd is the planned guaranteed sd within 5 %, per statistic; the
    # guaranteed noise covers the Gaussian release it stands for, and only just
    for name, values in standardised.items():
        pooled = np.concatenate(values)
        assert pooled.size >= 5000
        assert np.std(pooled) == pytest.approx(1.0, rel=0.05), name
        assert abs(np.mean(pooled)) < 5 / math.sqrt(pooled.size), name
    ratio = np.array(planned) / np.array(gaussian)
    assert np.all(ratio >= 1.0) and np.all(ratio <= 1.01)
