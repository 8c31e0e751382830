"""Overlap end to end through Flower: exact at epsilon = inf, and the wire audit.

Three small partners with planted canary identifiers run ``--task overlap``; every byte a
partner sent is searched for the canaries, the pseudonyms and their unblinded curve points.
A pair naming a partner that is not in the run is refused with nothing released.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from fedprofile.contract.customers import ID_COLUMN
from fedprofile.errors import FedprofileError
from fedprofile.presets.datasets import load_preset
from fedprofile.presets.identity import add_overlap
from fedprofile.presets.partition import Partition
from fedprofile.privacy.keys import load_key
from fedprofile.privacy.ledger import Ledger
from fedprofile.privacy.pseudonym import Pseudonymizer, normalize_email
from fedprofile.privacy.psi import hash_to_points, padded_size
from fedprofile.sim.runner import federation_key, partner_tables, simulate

pytestmark = pytest.mark.slow

CANARY = "Canary.Zebra+promo@GoogleMail.com"
POLICY = ("allow_non_private = true\nmax_epsilon_per_run = inf\ntotal_epsilon = inf\n"
          "min_overlap_size = 0\nmin_query_set_size = 10\n")


def _federation() -> list[Partition]:
    frame = load_preset("retail-transactions").frame
    parts = [Partition(name=r, frame=frame.loc[frame["partner_region"] == r].copy())
             for r in ("Germany", "France", "Rest of world")]
    parts = add_overlap(parts, share=0.1, id_column="email", seed=0)
    out = []
    for part in parts:
        canary = part.frame.head(3).copy()
        canary["email"] = CANARY
        out.append(Partition(name=part.name, frame=pd.concat([part.frame, canary])))
    return out


def test_overlap_is_exact_and_sends_no_identifier(tmp_path: Path) -> None:
    # Prepare
    parts = _federation()
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    spec = load_preset("retail-transactions").spec_path
    # Execute
    result = simulate(parts, spec_path=spec, out_dir=tmp_path / "out",
                      state_dir=tmp_path / "state", capture=tmp_path / "capture",
                      run_config={"task": "overlap", "epsilon": float("inf")}, seed=0,
                      policy=policy, evaluate=True)
    # Assert: every count is the true overlap (the canary is shared by all three)
    truth = result.metrics["true_overlap"]
    assert len(truth) == 3 and all(t["error"] == 0 and t["true"] >= 1 for t in truth)
    doc = json.loads((tmp_path / "out" / "model.json").read_text(encoding="utf-8"))
    assert doc["format"] == "fedprofile-overlap/1"
    # the coordinator saw each set only padded to its public bucket
    tables = partner_tables(parts, spec, tmp_path / "state")
    sizes = {p.name: t[ID_COLUMN].nunique() for p, t in zip(parts, tables, strict=True)}
    for cell in doc["pairs"]:
        assert cell["padded_set_sizes"] == [padded_size(sizes[n]) for n in cell["partners"]]
    assert doc["noisy_customers"] == sizes  # epsilon = inf: the released count is exact
    assert "data:image/png" in (tmp_path / "out" / "report.html").read_text()
    # and nothing identifying left a partner
    files = list((tmp_path / "capture").rglob("*.bin"))
    captured = b"".join(f.read_bytes() for f in files)
    assert any("overlap" in f.name for f in files)
    pseudo = Pseudonymizer(load_key(federation_key(tmp_path / "state")))
    pids = [str(p) for t in partner_tables(parts, spec, tmp_path / "state")
            for p in t[ID_COLUMN].head(200)]
    forbidden = [CANARY.encode(), normalize_email(CANARY).encode(),
                 hashlib.sha256(normalize_email(CANARY).encode()).hexdigest().encode(),
                 pseudo.email(CANARY).encode(), *(p.encode() for p in pids),
                 *(row.tobytes() for row in hash_to_points(pids))]
    assert [f for f in forbidden if f in captured] == []


def test_a_pair_with_an_unknown_partner_releases_nothing(tmp_path: Path) -> None:
    parts = _federation()[:2]
    spec = load_preset("retail-transactions").spec_path
    with pytest.raises(FedprofileError, match=r"partner\(s\) \['Narnia'\] not in the run"):
        simulate(parts, spec_path=spec, out_dir=tmp_path / "out", state_dir=tmp_path / "st",
                 run_config={"task": "overlap", "epsilon": 1.0, "pairs": "Germany:Narnia"},
                 seed=0, evaluate=False)
    for ledger in (tmp_path / "st" / "partners").rglob("ledger.sqlite"):
        with Ledger(ledger) as book:
            assert book.events() == []


def test_partners_with_different_keys_get_no_overlap(tmp_path: Path) -> None:
    from flwr.simulation import run_simulation

    from fedprofile.client.app import build_client_app
    from fedprofile.privacy.keys import generate_key, write_key
    from fedprofile.server.app import build_server_app
    from fedprofile.sim.runner import _prepare_partners

    parts = _federation()
    spec = load_preset("retail-transactions").spec_path
    nodes = _prepare_partners(parts, spec_path=spec, state_dir=tmp_path, policy=None, seed=0,
                              capture=None)
    nodes[1]["key"] = str(write_key(generate_key(key_id="k-rotated"), tmp_path / "o.key"))
    overrides = {"spec": str(spec), "out-dir": str(tmp_path / "out"), "task": "overlap",
                 "expected-partners": 3, "epsilon": 1.0}
    with pytest.raises(FedprofileError, match="different keys"):
        run_simulation(server_app=build_server_app(overrides),
                       client_app=build_client_app(nodes), num_supernodes=3,
                       backend_config={"client_resources": {"num_cpus": 1}})
    assert not (tmp_path / "out" / "model.json").exists()
    for ledger in (tmp_path / "partners").rglob("ledger.sqlite"):
        with Ledger(ledger) as book:
            assert book.events() == []
