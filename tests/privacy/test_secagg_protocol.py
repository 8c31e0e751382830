"""The SecAgg protocol: exact sums, dropouts, refusals, key authentication, what is seen."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scipy.stats import chisquare, kstest

from fedprofile.errors import ContractError, ProtocolError
from fedprofile.privacy.mechanisms import secure_rng
from fedprofile.privacy.secagg import crypto, shamir
from fedprofile.privacy.secagg.coordinator import SecaggCoordinator
from fedprofile.privacy.secagg.messages import (
    ConfirmRequest,
    MaskedInput,
    MaskRequest,
    UnmaskRequest,
)
from fedprofile.privacy.secagg.partner import SecaggPartner
from fedprofile.privacy.secagg.plan import plan_secagg
from fedprofile.privacy.secagg.simulate import simulate_release, simulate_run

BITS = 40


def _vectors(m: int, dim: int, seed: int = 0, bits: int = BITS) -> dict[str, np.ndarray]:
    rng = secure_rng(seed)
    return {f"p{i}": rng.integers(0, 2**bits, dim, dtype=np.uint64) for i in range(m)}


def _sum(vectors: list[np.ndarray], bits: int = BITS) -> np.ndarray:
    total = np.zeros_like(vectors[0])
    for v in vectors:
        total += v
    return total & np.uint64(2**bits - 1)


def test_exact_modular_sum_without_dropouts() -> None:
    vecs = _vectors(5, 300)
    res = simulate_run([vecs], threshold=3, bits=BITS, min_survivors=3)
    np.testing.assert_array_equal(res.totals[0], _sum(list(vecs.values())))


@pytest.mark.parametrize("step", ["advertise", "agree_keys", "mask"])
def test_dropout_before_the_masked_vector_leaves_it_out(step: str) -> None:
    vecs = _vectors(6, 100, seed=1)
    res = simulate_run([vecs], threshold=4, bits=BITS, min_survivors=4,
                       dropouts={"p2": (0, step), "p5": (0, step)})
    kept = [v for p, v in vecs.items() if p not in {"p2", "p5"}]
    np.testing.assert_array_equal(res.totals[0], _sum(kept))
    assert res.survivors[0] == ("p0", "p1", "p3", "p4")


def test_dropout_after_sending_the_masked_vector_keeps_it_in() -> None:
    vecs = _vectors(6, 100, seed=2)
    res = simulate_run([vecs], threshold=4, bits=BITS, min_survivors=4,
                       dropouts={"p0": (0, "unmask"), "p4": (0, "unmask")})
    np.testing.assert_array_equal(res.totals[0], _sum(list(vecs.values())))


def test_several_rounds_a_dropped_partner_stays_out() -> None:
    rounds = [_vectors(5, 50, seed=s) for s in range(3)]
    res = simulate_run(rounds, threshold=3, bits=BITS, min_survivors=3,
                       dropouts={"p1": (1, "mask")})
    np.testing.assert_array_equal(res.totals[0], _sum(list(rounds[0].values())))
    for r in (1, 2):
        kept = [v for p, v in rounds[r].items() if p != "p1"]
        np.testing.assert_array_equal(res.totals[r], _sum(kept))
    assert res.survivors[2] == ("p0", "p2", "p3", "p4")


def test_real_sum_with_dropouts_within_quantisation_bound() -> None:
    m, dim = 7, 1000
    plan = plan_secagg(partners=m, dropouts=2, dim=dim, bound=1e4, sensitivity=1.0, mu=math.inf)
    rng = secure_rng(4)
    values = {f"p{i}": rng.normal(0, 100, dim) for i in range(m)}
    for drops, gone in (({"p3": (0, "mask")}, {"p3"}),
                        ({"p3": (0, "unmask"), "p6": (0, "unmask")}, set())):
        decoded, _ = simulate_release(plan, values, rng, drops)
        real = sum(v for p, v in values.items() if p not in gone)
        bound = plan.quantization.rounding_error_bound(m - len(gone))
        assert np.max(np.abs(decoded - real)) < bound
        assert np.max(np.abs(decoded - real) / np.abs(real)) <= 1e-6


def test_after_a_dropout_every_survivor_must_unmask() -> None:
    # a dropped partner's pairwise masks come off with each survivor's own round key, so a
    # second partner silent at the unmask step stops the round; nothing is released
    plan = plan_secagg(partners=7, dropouts=2, dim=10, bound=1e4, sensitivity=1.0, mu=math.inf)
    values = {f"p{i}": np.ones(10) for i in range(7)}
    with pytest.raises(ProtocolError, match="'p3' dropped, so every survivor must give its "
                                            "pairwise key with them; 'p6' did not answer"):
        simulate_release(plan, values, secure_rng(0), {"p3": (0, "mask"), "p6": (0, "unmask")})


@pytest.mark.parametrize(("step", "match"), [("mask", "sent masked vectors"),
                                             ("agree_keys", "agreed their keys"),
                                             ("unmask", "answered the unmask step")])
def test_too_few_survivors_refuses_clearly(step: str, match: str) -> None:
    vecs = _vectors(5, 20)
    drops = {p: (0, step) for p in ("p0", "p1", "p2")}
    with pytest.raises(ProtocolError, match=match):
        simulate_run([vecs], threshold=3, bits=BITS, min_survivors=3, dropouts=drops)


def test_plan_refuses_a_release_below_its_guaranteed_noise() -> None:
    plan = plan_secagg(partners=5, dropouts=1, dim=10, bound=10.0, sensitivity=1.0, mu=1.0)
    values = {f"p{i}": np.zeros(10) for i in range(5)}
    with pytest.raises(ProtocolError, match="at least 4"):
        simulate_release(plan, values, secure_rng(0), {"p0": (0, "mask"), "p1": (0, "mask")})


def test_a_single_masked_vector_looks_uniform_on_the_ring() -> None:
    """Everything the coordinator receives from one partner is indistinguishable from noise."""
    dim = 20_000
    vecs = {f"p{i}": np.full(dim, 12_345 * (i + 1), dtype=np.uint64) for i in range(3)}
    res = simulate_run([vecs], threshold=2, bits=BITS, min_survivors=2)
    masked = [m for m in res.received if isinstance(m, MaskedInput)]
    assert len(masked) == 3
    for msg in masked:
        values = msg.masked.astype(np.float64) / 2**BITS
        assert kstest(values, "uniform").pvalue > 1e-4
        high = (msg.masked >> np.uint64(BITS - 4)).astype(np.int64)
        assert chisquare(np.bincount(high, minlength=16)).pvalue > 1e-4
        assert not np.any(msg.masked == vecs[msg.partner_id])  # no coordinate in the clear
    # the test has power: the partner's own (unmasked) vector fails it
    assert kstest(vecs["p0"].astype(np.float64) / 2**BITS, "uniform").pvalue < 1e-10
    np.testing.assert_array_equal(res.totals[0], _sum(list(vecs.values())))


def _setup(m: int = 4) -> tuple[SecaggCoordinator, dict[str, SecaggPartner], list]:
    keys = {f"p{i}": Ed25519PrivateKey.generate() for i in range(m)}
    trusted = {p: k.public_key() for p, k in keys.items()}
    partners = {p: SecaggPartner(p, keys[p], trusted) for p in keys}
    coord = SecaggCoordinator(list(keys), threshold=3, bits=BITS, dim=8, min_survivors=3)
    adverts = [partners[p].advertise(coord.setup) for p in partners]
    return coord, partners, adverts


def test_swapped_public_key_is_refused() -> None:
    coord, partners, adverts = _setup()
    rogue = partners["p3"]._mask_sk  # the coordinator substitutes a key it knows
    adverts[1] = dataclasses.replace(adverts[1], mask_key=crypto.public_bytes(rogue))
    broadcast = coord.broadcast(adverts)
    with pytest.raises(ProtocolError, match="'p1' are not signed"):
        partners["p0"].agree_keys(broadcast)


def test_key_signed_by_an_untrusted_key_is_refused() -> None:
    coord, partners, adverts = _setup()
    other = Ed25519PrivateKey.generate()
    payload = crypto.advert_payload(coord.setup.run_id, "p2", adverts[2].mask_key,
                                    adverts[2].enc_key)
    adverts[2] = dataclasses.replace(adverts[2], signature=other.sign(payload))
    with pytest.raises(ProtocolError, match="'p2' are not signed"):
        partners["p0"].agree_keys(coord.broadcast(adverts))
    stranger = SecaggPartner("p9", other, {})
    with pytest.raises(ProtocolError, match="not in the run's roster"):
        stranger.advertise(coord.setup)


def test_partner_without_trusted_key_is_refused() -> None:
    coord, partners, adverts = _setup()
    partners["p0"]._trusted.pop("p3")
    with pytest.raises(ProtocolError, match="'p3' has no trusted signing key"):
        partners["p0"].agree_keys(coord.broadcast(adverts))


def test_own_keys_replaced_is_refused() -> None:
    """A second, validly signed advert under p0's id (a restarted p0) is not p0's own keys."""
    keys = {f"p{i}": Ed25519PrivateKey.generate() for i in range(4)}
    trusted = {p: k.public_key() for p, k in keys.items()}
    partners = {p: SecaggPartner(p, keys[p], trusted) for p in keys}
    coord = SecaggCoordinator(list(keys), threshold=3, bits=BITS, dim=8, min_survivors=3)
    adverts = [partners[p].advertise(coord.setup) for p in partners]
    twin = SecaggPartner("p0", keys["p0"], trusted).advertise(coord.setup)
    with pytest.raises(ProtocolError, match="other keys under this partner's id"):
        partners["p0"].agree_keys(coord.broadcast([twin, *adverts[1:]]))


def _run_to_mask(m: int = 4):
    coord, partners, adverts = _setup(m)
    broadcast = coord.broadcast(adverts)
    coord.collect_agreements([partners[p].agree_keys(broadcast) for p in partners])
    requests = coord.mask_requests()
    vec = np.zeros(8, dtype=np.uint64)
    masked = [partners[p].mask(r, vec) for p, r in requests.items()]
    return coord, partners, requests, masked


def test_partner_refuses_replayed_round_small_groups_and_tampering() -> None:
    coord, partners, requests, masked = _run_to_mask()
    with pytest.raises(ProtocolError, match="round 0 is not after round 0"):
        partners["p0"].mask(requests["p0"], np.zeros(8, dtype=np.uint64))
    coord.collect_masked(masked)
    unmask = coord.unmask_requests()
    req = unmask["p0"]
    owner = next(iter(req.seed_shares))
    blob = bytearray(req.seed_shares[owner])
    blob[-1] ^= 1
    bad = dataclasses.replace(req, seed_shares={**req.seed_shares, owner: bytes(blob)})
    with pytest.raises(ProtocolError, match="failed authentication"):
        partners["p0"].unmask(bad)
    few = UnmaskRequest(req.run_id, req.round, ("p0", "p1"), ("p2", "p3"), {})
    with pytest.raises(ProtocolError, match="2 survivors; the plan needs 3"):
        partners["p1"].unmask(few)
    wrong = UnmaskRequest(req.run_id, req.round, ("p0", "p1", "p2"), (), {})
    with pytest.raises(ProtocolError, match="split this round's participants"):
        partners["p1"].unmask(wrong)
    small = MaskRequest(req.run_id, 5, ("p0", "p1"), 8)
    with pytest.raises(ProtocolError, match="2 participants; the plan needs 3"):
        partners["p1"].mask(small, np.zeros(8, dtype=np.uint64))


def test_a_partner_dropped_after_surviving_a_round_keeps_that_round_secret() -> None:
    """A coordinator that declares a partner dropped in round 1, after it survived round 0
    (whose self-mask seed was therefore revealed), cannot open its round-0 vector."""
    # Prepare: five partners; p4's round-0 input
    coord, partners, adverts = _setup(5)
    coord.collect_agreements([partners[p].agree_keys(coord.broadcast(adverts))
                              for p in partners])
    run_id, dim = coord.setup.run_id, 8
    inputs = {p: np.arange(dim, dtype=np.uint64) * (i + 1) for i, p in enumerate(partners)}
    masked0 = [partners[p].mask(r, inputs[p]) for p, r in coord.mask_requests().items()]
    coord.collect_masked(masked0)
    replies0 = [partners[p].unmask(r) for p, r in coord.unmask_requests().items()]
    coord.unmask(replies0)
    index = {p: i + 1 for i, p in enumerate(coord.adverts)}
    seed = shamir.combine({index[r.partner_id]: r.seed_shares["p4"] for r in replies0},
                          coord.setup.threshold, crypto.SEED_BYTES)
    self_mask = crypto.mask_vector(seed, run_id=run_id, label=b"self", round=0, dim=dim,
                                   bits=BITS)
    own = next(m.masked for m in masked0 if m.partner_id == "p4")

    def opened(keys: dict[str, bytes]) -> np.ndarray:
        # p4 sorts after p0-p3, so it subtracted each pairwise mask: add them back
        out = own - self_mask
        for key in keys.values():
            out = out + crypto.expand_mask(key, dim=dim, bits=BITS)
        return out & np.uint64((1 << BITS) - 1)

    # Execute: round 1 without p4's vector; every survivor reveals what p4's drop needs
    masked1 = [partners[p].mask(r, inputs[p]) for p, r in coord.mask_requests().items()
               if p != "p4"]
    confirm = coord.collect_masked(masked1)
    unmask = coord.unmask_requests([partners[p].confirm(r) for p, r in confirm.items()])
    replies1 = [partners[p].unmask(r) for p, r in unmask.items()]
    total = coord.unmask(replies1)

    # Assert: the round-1 sum is exact; each reply gives only round 1's key with p4
    assert np.array_equal(total, _sum([inputs[p] for p in ("p0", "p1", "p2", "p3")]))
    assert all(set(r.pair_keys) == {"p4"} and "p4" not in r.seed_shares for r in replies1)
    revealed = {r.partner_id: r.pair_keys["p4"] for r in replies1}
    # those keys do not open p4's round-0 vector; its round-0 keys would have
    assert not np.array_equal(opened(revealed), inputs["p4"])
    round0 = {q: crypto.round_key(partners[q]._pair_secret["p4"], run_id=run_id, label=b"pair",
                                  round=0) for q in revealed}
    assert np.array_equal(opened(round0), inputs["p4"])


def test_partners_shown_different_survivor_lists_reveal_nothing_for_them() -> None:
    """A coordinator telling p0 that p1 dropped, and p2-p4 that p0 dropped, would get p0's
    seed shares from p1 and every pairwise key of p0: each partner signs one list per round
    and reveals only for a list every survivor on it signed."""
    coord, partners, _, masked = _run_to_mask(5)
    coord.collect_masked(masked)  # nobody dropped: the coordinator invents the lists
    run_id = coord.setup.run_id
    everyone = tuple(sorted(partners))
    view_p0 = ConfirmRequest(run_id, 0, ("p0", "p2", "p3", "p4"), ("p1",))
    view_rest = ConfirmRequest(run_id, 0, ("p1", "p2", "p3", "p4"), ("p0",))
    signed = {p: partners[p].confirm(view_rest) for p in ("p2", "p3", "p4")}
    own = partners["p0"].confirm(view_p0)
    # a partner that confirmed one list neither signs nor unmasks another
    with pytest.raises(ProtocolError, match="confirmed another list"):
        partners["p2"].confirm(view_p0)
    with pytest.raises(ProtocolError, match="confirmed another list"):
        partners["p2"].unmask(UnmaskRequest(run_id, 0, everyone, (), {}))
    # p0's list lacks p2-p4's signatures: p0 reveals nothing
    with pytest.raises(ProtocolError, match="'p2' did not sign"):
        partners["p0"].unmask(UnmaskRequest(run_id, 0, view_p0.survivors, ("p1",), {},
                                            {"p0": own.signature}))
    # p2's list lacks p1's signature: p2 reveals nothing, a forged one included
    sigs = {p: c.signature for p, c in signed.items()}
    for forged in ({}, {"p1": own.signature}):
        with pytest.raises(ProtocolError, match="'p1' did not sign"):
            partners["p2"].unmask(UnmaskRequest(run_id, 0, view_rest.survivors, ("p0",), {},
                                                {**sigs, **forged}))
    # a list with a dropped partner and no confirmation at all is refused too
    with pytest.raises(ProtocolError, match="only after every survivor confirmed"):
        partners["p1"].unmask(UnmaskRequest(run_id, 0, view_rest.survivors, ("p0",), {}))


def test_vector_outside_the_ring_is_refused() -> None:
    coord, partners, adverts = _setup()
    broadcast = coord.broadcast(adverts)
    coord.collect_agreements([partners[p].agree_keys(broadcast) for p in partners])
    req = coord.mask_requests()["p0"]
    with pytest.raises(ProtocolError, match="uint64 residues"):
        partners["p0"].mask(req, np.full(8, 2**BITS, dtype=np.uint64))


def test_a_round_shorter_than_the_run_sums_exactly_and_its_length_is_checked() -> None:
    # Prepare: a run of 8-value vectors, then a round of 3 values
    coord, partners, adverts = _setup()
    broadcast = coord.broadcast(adverts)
    coord.collect_agreements([partners[p].agree_keys(broadcast) for p in partners])
    vectors = {p: np.arange(3, dtype=np.uint64) + i for i, p in enumerate(partners)}

    # Execute
    requests = coord.mask_requests(3)
    masked = [partners[p].mask(r, vectors[p]) for p, r in requests.items()]
    coord.collect_masked(masked)
    unmask = coord.unmask_requests()
    total = coord.unmask([partners[p].unmask(r) for p, r in unmask.items()])

    # Assert: 3 values on the wire, the exact sum; a longer round and a wrong length refused
    assert all(m.masked.shape == (3,) for m in masked)
    np.testing.assert_array_equal(total, _sum(list(vectors.values())))
    with pytest.raises(ProtocolError, match="a round of 9 values does not fit"):
        coord.mask_requests(9)
    nxt = coord.mask_requests(3)["p0"]
    with pytest.raises(ProtocolError, match="the vector must be 3 uint64 residues"):
        partners["p0"].mask(nxt, np.zeros(8, dtype=np.uint64))
    with pytest.raises(ProtocolError, match="a round of 9 values does not fit"):
        partners["p0"].mask(dataclasses.replace(nxt, dim=9), np.zeros(9, dtype=np.uint64))


class _Restarting(dict):
    """Partners rebuilt from exported state before every message (a new process each time)."""

    def __init__(self, partners: dict[str, SecaggPartner], keys: dict, trusted: dict) -> None:
        super().__init__(partners)
        self.keys, self.trusted = keys, trusted

    def __getitem__(self, pid: str) -> SecaggPartner:
        state = super().__getitem__(pid).export_state()
        fresh = SecaggPartner.restore(pid, self.keys[pid], self.trusted, state)
        super().__setitem__(pid, fresh)
        return fresh


def test_partner_state_survives_a_restart_between_messages() -> None:
    keys = {f"p{i}": Ed25519PrivateKey.generate() for i in range(5)}
    trusted = {p: k.public_key() for p, k in keys.items()}
    partners = _Restarting({p: SecaggPartner(p, keys[p], trusted) for p in keys}, keys, trusted)
    rounds = [_vectors(5, 64, seed=s) for s in range(2)]
    res = simulate_run(rounds, threshold=3, bits=BITS, min_survivors=3, partners=partners,
                       dropouts={"p2": (0, "unmask"), "p4": (1, "mask")})
    np.testing.assert_array_equal(res.totals[0], _sum(list(rounds[0].values())))
    np.testing.assert_array_equal(res.totals[1], _sum([rounds[1][p] for p in ("p0", "p1",
                                                                               "p3")]))


def test_coordinator_refuses_a_malformed_masked_vector() -> None:
    coord, _, _, masked = _run_to_mask()
    bad = dataclasses.replace(masked[1], masked=np.full(8, 2**BITS, dtype=np.uint64))
    with pytest.raises(ProtocolError, match="partner 'p1' sent a masked vector"):
        coord.collect_masked([masked[0], bad, *masked[2:]])


def test_plans_share_one_ring() -> None:
    sums = plan_secagg(partners=4, dropouts=1, dim=6, bound=1e3, sensitivity=2.0, mu=0.4)
    counts = plan_secagg(partners=4, dropouts=1, dim=2, bound=1e5, sensitivity=1.0, mu=0.3)
    bits = max(sums.quantization.bits, counts.quantization.bits)
    sums, counts = sums.on_ring(bits), counts.on_ring(bits)
    rng = secure_rng(2)
    data = {f"p{i}": (rng.normal(0, 10, 6), rng.integers(0, 100, 2).astype(float))
            for i in range(4)}
    enc = {p: np.concatenate([sums.encode(s, rng), counts.encode(c, rng)])
           for p, (s, c) in data.items()}
    total = simulate_run([enc], threshold=3, bits=bits, min_survivors=3).totals[0]
    got_s, got_c = sums.quantization.decode_sum(total[:6]), counts.quantization.decode_sum(
        total[6:])
    np.testing.assert_allclose(got_s, sum(s for s, _ in data.values()), atol=6 * sums.noise_sd)
    np.testing.assert_allclose(got_c, sum(c for _, c in data.values()), atol=6 * counts.noise_sd)
    with pytest.raises(ContractError, match="cannot hold"):
        sums.on_ring(bits - 30)


def test_partner_refuses_a_run_below_its_own_floor_or_without_majority_threshold() -> None:
    key = Ed25519PrivateKey.generate()
    partner = SecaggPartner("p0", key, {"p0": key.public_key()}, min_survivors=4)
    low = SecaggCoordinator([f"p{i}" for i in range(5)], threshold=3, bits=BITS, dim=4,
                            min_survivors=3)
    with pytest.raises(ProtocolError, match="sums of 3 partners; partner 'p0' requires at least 4"):
        partner.advertise(low.setup)
    minority = SecaggCoordinator([f"p{i}" for i in range(6)], threshold=3, bits=BITS, dim=4,
                                 min_survivors=4)
    with pytest.raises(ProtocolError, match="not a majority"):
        partner.advertise(minority.setup)
