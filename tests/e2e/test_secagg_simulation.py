"""Secure aggregation end to end on Flower's simulation engine (bank data, 4 partners)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.common.serde import message_from_proto
from flwr.proto.message_pb2 import Message as ProtoMessage

from fedprofile.contract.parser import load_spec
from fedprofile.errors import FedprofileError
from fedprofile.presets.datasets import load_preset
from fedprofile.privacy.accounting import composed_epsilon
from fedprofile.privacy.ledger import Ledger
from fedprofile.privacy.secagg.messages import KeyAdvert, UnmaskReply
from fedprofile.privacy.secagg.plan import default_threshold
from fedprofile.privacy.secagg.shamir import SHARE_BYTES
from fedprofile.protocol.secagg import RING_BITS, SecaggMasked, SecureSum, decode
from fedprofile.sim.runner import SimulationResult, simulate

pytestmark = pytest.mark.slow

PARTNERS, DROPOUTS = 4, 1


def _run(root: Path, noise: str, epsilon: float | str) -> SimulationResult:
    bank = load_preset("bank")
    return simulate(bank.partitions(PARTNERS), spec_path=bank.spec_path, out_dir=root / "out",
                    state_dir=root / "state", capture=root / "capture", seed=0,
                    evaluate=False,
                    run_config={"k": 3, "epsilon": epsilon, "rounds": 2, "noise": noise,
                                "secagg-dropouts": DROPOUTS, "run-id": f"secagg-{noise}"})


@pytest.fixture(scope="module")
def exact_secagg(tmp_path_factory) -> tuple[SimulationResult, Path]:
    root = tmp_path_factory.mktemp("secagg-exact")
    return _run(root, "secagg", "inf"), root


@pytest.fixture(scope="module")
def exact_partner(tmp_path_factory) -> SimulationResult:
    return _run(tmp_path_factory.mktemp("partner-exact"), "partner", "inf")


def _captured(root: Path, kind: str) -> list[tuple[str, object]]:
    out = []
    for path in sorted((root / "capture").rglob(f"*-{kind}-reply.bin")):
        proto = ProtoMessage()
        proto.ParseFromString(path.read_bytes())
        out.append((path.parent.name, message_from_proto(proto).content))
    return out


def test_secagg_without_noise_equals_partner_noise_within_the_quantisation_bound(
        exact_secagg, exact_partner) -> None:
    # Prepare: the rounding bound of one round's sums and counts (4 partners, t = 1)
    secure, _ = exact_secagg
    spec = load_spec(load_preset("bank").spec_path)
    k, d = 3, spec.dim
    sums, counts = SecureSum((("sums", k * d, spec.norm_bound, 0.0),
                              ("counts", k, 1.0, 0.0))).plans(PARTNERS, DROPOUTS)
    sizes = exact_partner.model.segment_sizes_
    centers = exact_partner.model.cluster_centers_
    err_sum = sums.quantization.rounding_error_bound(
        magnitude=float(np.abs(centers).max() * sizes.max()))
    err_count = counts.quantization.rounding_error_bound(magnitude=float(sizes.max()))
    bound = (err_sum + np.abs(centers).max() * err_count) / (sizes.min() - err_count)

    # Execute
    diff = np.abs(secure.model.cluster_centers_ - centers).max()

    # Assert: the same centres up to rounding (sums and counts are exact integers of steps)
    assert secure.model.privacy["noise_placement"] == "secagg"
    assert exact_partner.model.privacy["noise_placement"] == "partner"
    assert 0 < bound < 1e-9  # public values only: 62-bit ring, 4 partners, 1e8 customers
    assert diff <= bound
    assert diff <= 1e-6 * np.abs(centers).max()
    assert np.allclose(secure.model.segment_sizes_, sizes, atol=PARTNERS * err_count)


def test_the_coordinator_receives_only_masked_vectors(exact_secagg) -> None:
    # Prepare
    _, root = exact_secagg
    masked = [(who, decode(SecaggMasked, content))
              for who, content in _captured(root, "train-kmeans")]
    unmask = [decode(UnmaskReply, content) for _, content in
              _captured(root, "query-secagg_unmask")]
    adverts = [decode(KeyAdvert, content) for _, content in _captured(root, "query-secagg_keys")]

    # Execute: residues as fractions of the ring, and how many look like a plain encoding
    # (a signed value below 2**40: plain coordinates here are below 2**32)
    values = np.concatenate([m.masked.masked for _, m in masked])
    fraction = values.astype(np.float64) / 2.0**RING_BITS
    signed = np.where(values >= np.uint64(1 << (RING_BITS - 1)),
                      (np.uint64(1 << RING_BITS) - values).astype(np.float64),
                      values.astype(np.float64))
    small = int(np.sum(signed < 2.0**40))
    bins = np.bincount(np.minimum((fraction * 16).astype(int), 15), minlength=16)
    expected = len(values) / 16
    chi2 = float(np.sum((bins - expected) ** 2 / expected))

    # Assert: 4 partners x 3 rounds of masked vectors, nothing else carries their values;
    # a threshold of partners gives unmasking shares, all of them in the last round
    assert len(masked) == PARTNERS * 3
    assert len(unmask) == default_threshold(PARTNERS) * 2 + PARTNERS
    assert len(adverts) == PARTNERS
    for _, content in _captured(root, "train-kmeans"):
        assert "arrays" not in content  # no float array: only the masked residues
    assert small <= 3  # a uniform residue falls there with probability 2**-21
    assert abs(fraction.mean() - 0.5) < 5 / np.sqrt(12 * len(values))
    assert chi2 < 45.0  # 15 degrees of freedom: p < 1e-4
    for reply in unmask:  # no dropouts: only seed shares, never a pairwise key
        assert reply.pair_keys == {}
        assert all(len(share) == SHARE_BYTES for share in reply.seed_shares.values())
    # the masked vectors alone do not add up to the sum: the self-masks stay on them
    by_round: dict[int, np.ndarray] = {}
    for _, m in masked:
        by_round[m.masked.round] = by_round.get(m.masked.round, 0) + m.masked.masked
    first = by_round[0] & np.uint64((1 << RING_BITS) - 1)
    assert np.sum(first < np.uint64(1 << 40)) <= 3


def test_no_partner_keeps_its_secure_aggregation_secrets_after_the_run(exact_secagg) -> None:
    _, root = exact_secagg
    folders = sorted((root / "state" / "partners").glob("*/secagg"))

    assert len(folders) == PARTNERS
    for folder in folders:  # only the signing key and the trusted keys stay
        assert sorted(p.name for p in folder.iterdir()) == ["partners.json", "signing.key"]


def test_ledgers_record_the_shares_and_the_guaranteed_noise(exact_secagg) -> None:
    # Prepare
    result, root = exact_secagg
    partner_db = sorted((root / "state" / "partners").glob("*/ledger.sqlite"))[0]

    # Execute
    with Ledger(partner_db) as ledger:
        notes = [n for n in ledger.notes() if n["kind"] == "secagg"]
    with Ledger(root / "out" / "federation_ledger.sqlite") as ledger:
        received = [n for n in ledger.notes() if n["kind"] == "secagg"]

    # Assert
    assert len(notes) == 3 and len(received) == 3
    release = json.loads(notes[0]["message"])["releases"][0]
    assert release["placement"] == "secagg" and release["dropouts"] == DROPOUTS
    assert release["partners"] == PARTNERS and "share_variance" in release
    assert "guaranteed_variance" in release
    assert json.loads(received[0]["message"])["received"] == "masked vectors and their sum only"
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert metrics["privacy"]["noise_placement"] == "secagg"


def _response(root: Path, task: str, target: str, noise: str, epsilon: float | str
              ) -> SimulationResult:
    bank = load_preset("bank")
    return simulate(bank.partitions(PARTNERS), spec_path=bank.spec_path, out_dir=root / "out",
                    state_dir=root / "state", seed=0, evaluate=True,
                    run_config={"task": task, "target": target, "epsilon": epsilon,
                                "noise": noise, "secagg-dropouts": DROPOUTS,
                                "run-id": f"{task}-{noise}"})


def test_secagg_ridge_without_noise_equals_partner_noise(tmp_path: Path) -> None:
    # Execute
    secure = _response(tmp_path / "secagg", "ridge", "balance", "secagg", "inf")
    plain = _response(tmp_path / "partner", "ridge", "balance", "partner", "inf")

    # Assert: the Gram's rounding (a step of 2**-29 on entries summing ~1e4 customers)
    # moves the coefficients by far less than 1e-6 of their size, and the fit not at all
    assert secure.model.privacy["noise_placement"] == "secagg"
    diff = np.linalg.norm(secure.model.coef_ - plain.model.coef_)
    assert diff <= 1e-6 * np.linalg.norm(plain.model.coef_)
    assert secure.metrics["response"]["federated"]["r2"] == pytest.approx(
        plain.metrics["response"]["federated"]["r2"], abs=1e-6)


def test_secagg_logistic_runs_its_gram_and_gradient_rounds(tmp_path: Path) -> None:
    # Execute
    result = _response(tmp_path, "logistic", "y", "secagg", 1.0)

    # Assert: every round was securely summed and the model is useful
    rounds = [r["message"] for r in result.model.params["round_seconds"]]
    assert rounds == ["query.profile", "train.gram", *["train.gradient"] * 3]
    with Ledger(tmp_path / "out" / "federation_ledger.sqlite") as ledger:
        notes = [json.loads(n["message"]) for n in ledger.notes() if n["kind"] == "secagg"]
    assert [n["message"] for n in notes] == rounds[1:]
    assert all(len(n["summed"]) == PARTNERS for n in notes)
    assert result.metrics["response"]["federated"]["auc"] > 0.65
    assert result.model.privacy["epsilon_spent"] == pytest.approx(1.0, rel=1e-6)
    assert result.model.privacy["accountant"] == "rdp-skellam"
    # and every partner's own ledger counts its Skellam releases in RDP: the same epsilon,
    # not the smaller GDP epsilon of their Gaussian counterparts
    books = sorted((tmp_path / "state" / "partners").glob("*/ledger.sqlite"))
    assert len(books) == PARTNERS
    for book in books:
        with Ledger(book) as ledger:
            events = ledger.events(run_id="logistic-secagg")
        assert {e.mechanism for e in events} == {"skellam"}
        assert composed_epsilon(events, 1e-6) == pytest.approx(1.0, rel=1e-6)


def test_a_policy_that_forbids_secagg_stops_the_run_before_any_release(tmp_path: Path) -> None:
    # Prepare: every partner's policy forbids secure aggregation
    policy = tmp_path / "policy.toml"
    policy.write_text("max_epsilon_per_run = 2.0\nmin_secure_aggregation_partners = 0\n")
    bank = load_preset("bank")

    # Execute / Assert: the refusal names the partners and the limit
    with pytest.raises(FedprofileError, match="min_secure_aggregation_partners' = 0") as info:
        simulate(bank.partitions(3), spec_path=bank.spec_path, out_dir=tmp_path / "out",
                 state_dir=tmp_path / "state", policy=policy, seed=0, evaluate=False,
                 run_config={"k": 2, "epsilon": 1.0, "noise": "secagg"})
    assert "query.profile" in str(info.value)
    for db in (tmp_path / "state" / "partners").glob("*/ledger.sqlite"):
        with Ledger(db) as ledger:
            assert ledger.events() == []


@pytest.mark.parametrize("forbid", [False, True], ids=["default-policy", "policy-forbids"])
def test_auto_noise_is_secagg_from_three_partners_unless_a_policy_demands_partner_noise(
        tmp_path: Path, forbid: bool) -> None:
    # Prepare: 3 partners and no 'noise' key (auto); the policy allows or forbids secagg
    policy = tmp_path / "policy.toml"
    policy.write_text("max_epsilon_per_run = 2.0\n"
                      + ("min_secure_aggregation_partners = 0\n" if forbid else ""))
    bank = load_preset("bank")
    # Execute
    result = simulate(bank.partitions(3), spec_path=bank.spec_path, out_dir=tmp_path / "out",
                      state_dir=tmp_path / "state", policy=policy, seed=0, evaluate=False,
                      run_config={"k": 2, "epsilon": 1.0, "rounds": 1})
    # Assert: the model, and every partner's ledger, say where the noise was added
    placement = "partner" if forbid else "secagg"
    assert result.model.privacy["noise_placement"] == placement
    assert sorted(result.model.partners) == sorted(p.name for p in bank.partitions(3))
    mechanisms = set()
    for db in (tmp_path / "state" / "partners").glob("*/ledger.sqlite"):
        with Ledger(db) as ledger:
            mechanisms |= {e.mechanism for e in ledger.events()}
    assert mechanisms == ({"gaussian"} if forbid else {"skellam"})
