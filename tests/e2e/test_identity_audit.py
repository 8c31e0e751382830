"""Identity and audit, end to end: canary identifiers never leave a partner; key mismatch.

Partners hold raw retail transaction lines with e-mails and phones. They pseudonymise with
the federation key, aggregate per customer and take part in a private segmentation with the
wire audit on. Every captured byte is then searched for the canaries in every form an
attacker could use to find them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from flwr.simulation import run_simulation

from fedprofile.client.app import build_client_app
from fedprofile.errors import FedprofileError
from fedprofile.presets.datasets import load_preset
from fedprofile.presets.partition import Partition
from fedprofile.privacy.keys import generate_key, load_key, write_key
from fedprofile.privacy.pseudonym import Pseudonymizer, normalize_email, normalize_phone
from fedprofile.server.app import build_server_app
from fedprofile.sim.runner import _prepare_partners, federation_key, simulate

pytestmark = pytest.mark.slow

CANARY_EMAILS = ["Canary.Zebra+promo@GoogleMail.com", "  canary.okapi@example.org "]
CANARY_PHONES = ["07400 999461", "+44 (0)7400 999 462"]


def _small_federation() -> list[Partition]:
    frame = load_preset("retail-transactions").frame
    parts = []
    for region in ("Germany", "France", "Rest of world"):
        rows = frame.loc[frame["partner_region"] == region].copy()
        parts.append(Partition(name=region, frame=rows))
    return parts


def _plant(parts: list[Partition]) -> list[Partition]:
    out = []
    for i, part in enumerate(parts):
        template = part.frame.head(12).copy()
        template["email"] = CANARY_EMAILS[i % 2]
        template["phone"] = CANARY_PHONES[i % 2]
        out.append(Partition(name=part.name, frame=pd.concat([part.frame, template])))
    return out


def _forms(value: str, normalised: str) -> list[bytes]:
    forms = []
    for text in {value, value.strip(), normalised, normalised.lstrip("+")}:
        digest = hashlib.sha256(text.encode())
        forms += [text.encode(), digest.hexdigest().encode(), digest.digest()]
    return forms


@pytest.mark.parametrize("noise", ["partner", "secagg"])
def test_canaries_never_leave_a_partner(tmp_path: Path, noise: str) -> None:
    # Prepare
    parts = _plant(_small_federation())
    preset = load_preset("retail-transactions")
    # Execute: the full pipeline with the wire audit on (k = 1: each partner holds under 100
    # customers and the default policy wants 50 per segment)
    result = simulate(parts, spec_path=preset.spec_path, out_dir=tmp_path / "out",
                                  state_dir=tmp_path / "state", capture=tmp_path / "capture",
                                  run_config={"k": 1, "epsilon": 1.0, "noise": noise}, seed=0,
                                  evaluate=False)
    files = list((tmp_path / "capture").rglob("*.bin"))
    captured = b"".join(f.read_bytes() for f in files)
    # Assert: the run happened and nothing identifying is in any byte that left (under
    # secagg: two setup messages, a masked reply per round, and unmask replies from 2 of
    # the 3 partners (the threshold), from all 3 in the last round)
    rounds = 1 + result.model.params["rounds"]
    assert len(files) == (3 * (1 + rounds) if noise == "partner"
                          else 3 * (3 + rounds) + 2 * (rounds - 1) + 3)
    assert result.model.privacy["noise_placement"] == noise
    key = load_key(federation_key(tmp_path / "state"))
    pseudo = Pseudonymizer(key)
    forbidden = [key.secret, key.secret.hex().encode()]
    for email in CANARY_EMAILS:
        forbidden += _forms(email, normalize_email(email))
        forbidden.append(pseudo.email(email).encode())
    for phone in CANARY_PHONES:
        forbidden += _forms(phone, normalize_phone(phone))
        forbidden.append(pseudo.phone(phone).encode())
    leaks = [f for f in forbidden if f in captured]
    assert leaks == []
    # and the pseudonyms of real customers are not sent either
    some_pids = {pseudo.email(e) for e in parts[0].frame["email"].head(50)}
    assert not any(pid.encode() in captured for pid in some_pids)
    for domain in (b"gmail.com", b"googlemail.com", b"example.co.uk", b"example.org"):
        assert domain not in captured


def test_partners_with_different_keys_are_stopped_before_any_release(tmp_path: Path) -> None:
    # Prepare: partner 1 holds another key than the others
    parts = _small_federation()
    preset = load_preset("retail-transactions")
    nodes = _prepare_partners(parts, spec_path=preset.spec_path, state_dir=tmp_path,
                              policy=None, seed=0, capture=None)
    other = write_key(generate_key(key_id="k-rotated"), tmp_path / "other.key")
    nodes[1]["key"] = str(other)
    overrides = {"spec": str(preset.spec_path), "out-dir": str(tmp_path / "out"),
                 "expected-partners": 3, "epsilon": 1.0, "k": 1}
    # Execute / Assert
    with pytest.raises(FedprofileError, match="different keys") as info:
        run_simulation(server_app=build_server_app(overrides),
                       client_app=build_client_app(nodes), num_supernodes=3,
                       backend_config={"client_resources": {"num_cpus": 1}})
    assert "k-rotated" in str(info.value)
    for home in (tmp_path / "partners").glob("*-*"):
        ledger = home / "ledger.sqlite"
        if ledger.exists():
            from fedprofile.privacy.ledger import Ledger

            with Ledger(ledger) as book:
                assert book.events() == []

