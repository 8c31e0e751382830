"""Lookalike wire audit: neither a pseudonym nor a seed member crosses the wire.

Three partners of the retail-transactions preset (keyed pseudonyms); the seed is a file of
150 of one partner's pseudonymised customers, a planted canary among them. Every byte each
partner sent is searched for the canary in every form, every seed pseudonym, a sample of
all partners' pseudonyms and the seed file's path. A seed file naming customers the owner
does not hold is refused with their count, before any release.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from fedprofile.contract.customers import ID_COLUMN
from fedprofile.errors import FedprofileError
from fedprofile.presets.datasets import load_preset
from fedprofile.presets.partition import Partition
from fedprofile.privacy.keys import load_key
from fedprofile.privacy.ledger import Ledger
from fedprofile.privacy.pseudonym import Pseudonymizer, normalize_email
from fedprofile.sim.runner import federation_key, partner_tables, simulate

pytestmark = pytest.mark.slow

CANARY = "Canary.Lookalike+seed@GoogleMail.com"
OWNER = "Rest of world"


def _federation() -> list[Partition]:
    frame = load_preset("retail-transactions").frame
    parts = [Partition(name=r, frame=frame.loc[frame["partner_region"] == r].copy())
             for r in ("Germany", "France", OWNER)]
    owner = parts[2].frame
    canary = owner.head(2).copy()
    canary["email"] = CANARY
    parts[2] = Partition(name=OWNER, frame=pd.concat([owner, canary]))
    return parts


def _seed_file(parts: list[Partition], spec: Path, state: Path, path: Path,
               extra: tuple[str, ...] = ()) -> list[str]:
    table = partner_tables(parts, spec, state)[2]
    pseudo = Pseudonymizer(load_key(federation_key(state)))
    seed = [pseudo.email(CANARY), *(p for p in table[ID_COLUMN].astype(str).head(400)
                                    if p != pseudo.email(CANARY))][:150]
    path.write_text("pid\n" + "\n".join([*seed, *extra]) + "\n", encoding="utf-8")
    return seed


def test_no_pseudonym_or_seed_member_crosses_the_wire(tmp_path: Path) -> None:
    # Prepare: the seed file is the seed owner's, read by it alone
    parts = _federation()
    spec = load_preset("retail-transactions").spec_path
    seed_path = tmp_path / "owner-only" / "seed-audience.csv"
    seed_path.parent.mkdir()
    seed = _seed_file(parts, spec, tmp_path / "state", seed_path)
    # Execute
    result = simulate(parts, spec_path=spec, out_dir=tmp_path / "out",
                      state_dir=tmp_path / "state", capture=tmp_path / "capture", seed=0,
                      seed_file=seed_path,
                      run_config={"task": "lookalike", "epsilon": 1.0, "seed-partner": OWNER,
                                  "seed-file": True, "lookalike-size": 50})
    # Assert: the run worked and charged every partner
    assert result.metrics["selected"] == {p.name: 50 for p in parts}
    assert result.metrics["lookalike"]["held_out"]["seed"] >= 10
    for db in (tmp_path / "state" / "partners").glob("*/ledger.sqlite"):
        with Ledger(db) as ledger:
            assert {e.stage for e in ledger.events()} == {"lookalike"}
    # the owner's audience holds pseudonyms, none of them a seed member
    files = list((tmp_path / "state" / "partners").glob("*Rest*/outputs/lookalike-*.parquet"))
    audience = pd.read_parquet(files[0])
    assert list(audience.columns) == [ID_COLUMN, "score", "rank"]
    assert not set(audience[ID_COLUMN]) & set(seed)
    # and nothing identifying, no seed member and no local path left any partner
    sent = list((tmp_path / "capture").rglob("*.bin"))
    captured = b"".join(f.read_bytes() for f in sent)
    assert any("lookalike" in f.name for f in sent) and any("gram" in f.name for f in sent)
    pids = [str(p) for t in partner_tables(parts, spec, tmp_path / "state")
            for p in t[ID_COLUMN].head(300)]
    forbidden = [CANARY.encode(), normalize_email(CANARY).encode(),
                 hashlib.sha256(normalize_email(CANARY).encode()).hexdigest().encode(),
                 str(seed_path).encode(), b"seed-audience.csv",
                 *(p.encode() for p in seed), *(p.encode() for p in pids)]
    assert [f for f in forbidden if f in captured] == []


def test_a_seed_file_with_unknown_pseudonyms_is_refused_with_their_count(tmp_path: Path
                                                                         ) -> None:
    parts = _federation()
    spec = load_preset("retail-transactions").spec_path
    seed_path = tmp_path / "seed.csv"
    _seed_file(parts, spec, tmp_path / "state", seed_path, extra=("zz-stranger-1",
                                                                   "zz-stranger-2"))
    with pytest.raises(FedprofileError) as info:
        simulate(parts, spec_path=spec, out_dir=tmp_path / "out", state_dir=tmp_path / "state",
                 seed=0, seed_file=seed_path, evaluate=False,
                 run_config={"task": "lookalike", "epsilon": 1.0, "seed-partner": OWNER,
                             "seed-file": True})
    assert "2 of the 152 pseudonyms in the seed file" in str(info.value)
    assert "zz-stranger" not in str(info.value)
    for db in (tmp_path / "state" / "partners").glob("*/ledger.sqlite"):
        with Ledger(db) as ledger:
            assert ledger.events() == []
