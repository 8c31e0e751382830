"""The partner's secure-aggregation handlers against the coordinator's protocol state.

Every message goes through its wire record (encode, then decode), as over Flower.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedprofile.client.app import kmeans, profile
from fedprofile.client.secure import (
    STALE_AFTER,
    masked_release,
    prune_state,
    public_key_hex,
    secagg_agree,
    secagg_confirm,
    secagg_keys,
    secagg_unmask,
    trust_each_other,
    trust_keys,
)
from fedprofile.client.site import PartnerSite
from fedprofile.client.statistics import cluster_partials
from fedprofile.config import NodeConfig
from fedprofile.errors import PolicyRefusedError, ProtocolError, SecureAggregationRefusedError
from fedprofile.privacy.ledger import Ledger
from fedprofile.privacy.secagg.coordinator import SecaggCoordinator
from fedprofile.privacy.secagg.messages import (
    Confirmation,
    ConfirmRequest,
    KeyAdvert,
    KeyBroadcast,
    KeysAgreed,
    UnmaskReply,
    UnmaskRequest,
)
from fedprofile.protocol import KMeansRequest, ProfileRequest
from fedprofile.protocol.secagg import (
    RING_BITS,
    SecaggMasked,
    SecaggSetup,
    SecureSum,
    decode,
    encode,
    mask_request,
    with_mask_request,
)
from fedprofile.server.kmeans import plan_kmeans

SPEC = """
[features.age]
kind = "numeric"
bounds = [18, 95]

[features.color]
kind = "categorical"
categories = ["red", "blue"]
other = true
"""
OPEN = ("max_epsilon_per_run = inf\ntotal_epsilon = inf\nallow_non_private = true\n"
        "min_secure_aggregation_partners = {floor}\n")


def _wire(kind: type, message: object) -> object:
    return decode(kind, encode(message))


def _sites(tmp_path: Path, n: int, *, floor: int = 3, trusted: bool = True,
           extra: str = "") -> list[PartnerSite]:
    sites = []
    (tmp_path / "spec.toml").write_text(SPEC)
    for i in range(n):
        folder = tmp_path / f"p{i}"
        folder.mkdir()
        rows = 300 + 50 * i
        pd.DataFrame({"age": (np.arange(rows) * (i + 3)) % 70 + 20,
                      "color": ["red" if j % (i + 2) else "blue" for j in range(rows)]}
                     ).to_csv(folder / "data.csv", index=False)
        (folder / "policy.toml").write_text(OPEN.format(floor=floor) + extra)
        sites.append(PartnerSite(NodeConfig(
            data_path=str(folder / "data.csv"), spec=str(tmp_path / "spec.toml"),
            partner_name=f"p{i}", state_dir=str(folder / "state"),
            policy=str(folder / "policy.toml"))))
    if trusted:
        trust_each_other({s.name: s.state_dir for s in sites})
    return sites


def _open(sites: list[PartnerSite], epsilon: float = math.inf):
    plan = plan_kmeans(epsilon=epsilon, delta=1e-6, lloyd_rounds=1,
                       norm_bound=sites[0].spec.norm_bound)
    for site in sites:
        profile(ProfileRequest(run_id="run1", spec_fingerprint=site.spec.fingerprint(),
                               epsilon_target=epsilon, delta=1e-6, stages=("kmeans",),
                               planned_events=plan.events(), min_segment_size=50, k=2), site)
    return plan


def _setup(sites: list[PartnerSite], dropouts: int, dim: int
           ) -> tuple[SecaggCoordinator, SecaggSetup]:
    m = len(sites)
    k = max(2, m // 2 + 1)
    coord = SecaggCoordinator([s.name for s in sites], threshold=k, bits=RING_BITS, dim=dim,
                              min_survivors=max(m - dropouts, k))
    return coord, SecaggSetup("run1", "kmeans", m, dropouts, coord.setup)


def _keys(sites: list[PartnerSite], coord: SecaggCoordinator, setup: SecaggSetup) -> None:
    adverts = [_wire(KeyAdvert, secagg_keys(_wire(SecaggSetup, setup), s)) for s in sites]
    relay = coord.broadcast(adverts)
    coord.collect_agreements([_wire(KeysAgreed, secagg_agree(_wire(KeyBroadcast, relay), s))
                              for s in sites])


@pytest.mark.parametrize("vanishes", ["after-masking", "before-masking"])
def test_a_round_survives_a_partner_that_vanishes(tmp_path: Path, vanishes: str) -> None:
    # Prepare: 4 partners, t = 1, an exact (epsilon = inf) start round with 3 centres
    sites = _sites(tmp_path, 4)
    plan = _open(sites)
    rnd = plan.rounds[0]
    centers = np.array([[-0.4, 0.6, 0.0, 0.0], [0.3, 0.0, 0.6, 0.0], [0.1, 0.0, 0.0, 0.6]])
    centers = centers[:, :sites[0].spec.dim]
    k, d = centers.shape
    coord, setup = _setup(sites, 1, k * (d + 1))
    _keys(sites, coord, setup)
    request = KMeansRequest(run_id="run1", spec_fingerprint=sites[0].spec.fingerprint(),
                            stage=rnd.stage, round=rnd.round, centers=centers,
                            sum_noise_multiplier=0.0, count_noise_multiplier=0.0)
    gone = sites[3]

    # Execute: mask (the vanished partner maybe not), unmask without it
    masks = coord.mask_requests()
    masked = []
    for site in sites:
        if site is gone and vanishes == "before-masking":
            continue
        content = with_mask_request(request.to_record(), masks[site.name])
        reply = kmeans(KMeansRequest.from_record(content), site, mask_request(content))
        masked.append(_wire(SecaggMasked, reply).masked)
    confirm = coord.collect_masked(masked)
    assert bool(confirm) == (vanishes == "before-masking")  # signed lists after a dropout
    unmask = coord.unmask_requests([
        _wire(Confirmation, secagg_confirm(_wire(ConfirmRequest, confirm[s.name]), s))
        for s in sites if s.name in confirm])
    replies = [_wire(UnmaskReply, secagg_unmask(_wire(UnmaskRequest, unmask[s.name]), s))
               for s in sites if s is not gone]
    total = coord.unmask(replies)
    parts = SecureSum((("sums", k * d, sites[0].spec.norm_bound, 0.0), ("counts", k, 1.0, 0.0)))
    plans = parts.plans(4, 1)
    sums, counts = parts.decode(plans, total)

    # Assert: the sum of every partner whose masked vector arrived, to the rounding bound
    summed = [s for s in sites if not (s is gone and vanishes == "before-masking")]
    true = [cluster_partials(s.matrix(), centers) for s in summed]
    assert np.abs(sums - np.sum([t[0] for t in true], axis=0).ravel()).max() \
        <= plans[0].quantization.rounding_error_bound()
    assert np.abs(counts - np.sum([t[1] for t in true], axis=0)).max() \
        <= plans[1].quantization.rounding_error_bound()
    if vanishes == "before-masking":
        assert gone.name in coord.excluded
    with Ledger(sites[0].state_dir / "ledger.sqlite") as book:
        (note,) = [n for n in book.notes() if n["kind"] == "secagg"]
    release = json.loads(note["message"])["releases"][0]
    assert release["dropouts"] == 1 and release["partners"] == 4
    assert release["guaranteed_variance"] == 3 * release["share_variance"]


def _state_files(site: PartnerSite) -> list[str]:
    return sorted(p.name for p in (site.state_dir / "secagg").glob("*.json")
                  if p.name != "partners.json") + sorted(
        p.name for p in (site.state_dir / "secagg").glob("*.lock"))


def test_a_runs_secrets_are_deleted_after_its_last_planned_release(tmp_path: Path) -> None:
    # Prepare: 3 partners, an exact k-means plan of several rounds, one secagg run for it
    sites = _sites(tmp_path, 3)
    plan = _open(sites)
    centers = np.zeros((2, sites[0].spec.dim))
    coord, setup = _setup(sites, 0, 2 * (sites[0].spec.dim + 1))
    _keys(sites, coord, setup)
    own = f"{setup.request.run_id.hex()}.json"
    assert len(plan.rounds) >= 2

    # Execute: every planned round, masked and unmasked through the wire records
    kept = []
    for rnd in plan.rounds:
        request = KMeansRequest(run_id="run1", spec_fingerprint=sites[0].spec.fingerprint(),
                                stage=rnd.stage, round=rnd.round, centers=centers,
                                sum_noise_multiplier=0.0, count_noise_multiplier=0.0)
        masks = coord.mask_requests()
        masked = [_wire(SecaggMasked, kmeans(request, s, masks[s.name])).masked for s in sites]
        coord.collect_masked(masked)
        unmask = coord.unmask_requests()
        coord.unmask([_wire(UnmaskReply, secagg_unmask(_wire(UnmaskRequest, unmask[s.name]),
                                                       s)) for s in sites])
        kept.append([own in _state_files(s) for s in sites])

    # Assert: the keys stay while releases are pending, and are gone after the last unmask;
    # the long-term signing key and the trusted keys stay
    assert all(all(row) for row in kept[:-1])
    assert kept[-1] == [False, False, False]
    for site in sites:
        assert _state_files(site) == []
        assert (site.state_dir / "secagg" / "signing.key").is_file()
        assert (site.state_dir / "secagg" / "partners.json").is_file()


def test_key_setup_prunes_only_other_runs_idle_state(tmp_path: Path) -> None:
    # Prepare: a stale run's state and half-written file (2 days idle), a live run's (1 hour)
    sites = _sites(tmp_path, 3)
    _open(sites)
    folder = sites[0].state_dir / "secagg"
    folder.mkdir(parents=True, exist_ok=True)
    stale, half, live = "ab" * 16 + ".json", "tmp-" + "cd" * 16 + ".json", "ef" * 16 + ".json"
    orphan_lock, live_lock = "12" * 16 + ".lock", "ef" * 16 + ".lock"
    for name, age in ((stale, 2 * 86400), (half, 2 * 86400), (live, 3600),
                      (orphan_lock, 2 * 86400), (live_lock, 2 * 86400)):
        (folder / name).write_text("{}")
        past = time.time() - age
        os.utime(folder / name, (past, past))
    (folder / "notes.json").write_text("{}")
    os.utime(folder / "notes.json", (0, 0))

    # Execute: a new run's key setup
    _, setup = _setup(sites, 0, 10)
    secagg_keys(_wire(SecaggSetup, setup), sites[0])

    # Assert: idle state older than STALE_AFTER is gone, and a lock whose run has no state;
    # the live run keeps its state and its (old) lock, the new run its own; files that are
    # not secagg state are not touched
    names = set(p.name for p in folder.iterdir())
    assert stale not in names and half not in names and orphan_lock not in names
    new = setup.request.run_id.hex()
    assert {live, live_lock, f"{new}.json", f"{new}.lock", "notes.json", "signing.key"} <= names
    assert STALE_AFTER == 24 * 3600
    assert prune_state(sites[0], now=time.time() + STALE_AFTER + 60) != []


def test_the_guaranteed_noise_is_recorded_for_a_private_round(tmp_path: Path) -> None:
    # Prepare
    sites = _sites(tmp_path, 4)
    plan = _open(sites, epsilon=1.0)
    rnd = plan.rounds[0]
    centers = np.zeros((2, sites[0].spec.dim))
    coord, setup = _setup(sites, 1, 2 * (sites[0].spec.dim + 1))
    _keys(sites, coord, setup)
    request = KMeansRequest(run_id="run1", spec_fingerprint=sites[0].spec.fingerprint(),
                            stage=rnd.stage, round=rnd.round, centers=centers,
                            sum_noise_multiplier=rnd.sum_noise_multiplier,
                            count_noise_multiplier=rnd.count_noise_multiplier)
    masks = coord.mask_requests()

    # Execute
    kmeans(request, sites[0], masks[sites[0].name])

    # Assert: the share covers the plan with m - t = 3 honest shares
    with Ledger(sites[0].state_dir / "ledger.sqlite") as book:
        (note,) = [n for n in book.notes() if n["kind"] == "secagg"]
        events = book.events(run_id="run1", party="p0")
    sums = json.loads(note["message"])["releases"][0]
    assert sums["guaranteed_variance"] == pytest.approx(3 * sums["share_variance"])
    assert sums["share_variance"] > 0 and len(events) == 2
    sigma_real = math.sqrt(sums["guaranteed_variance"]) / sums["scale"]
    assert sigma_real <= rnd.sum_noise_multiplier * sites[0].spec.norm_bound * 1.01


@pytest.mark.parametrize(("partners", "floor", "dropouts", "limit"), [
    (3, 4, 0, "needs at least 4 (policy 'min_secure_aggregation_partners' = 4"),
    (3, 3, 2, "needs at least 5 (policy 'min_secure_aggregation_partners' = 3, and max(t"),
    (3, 0, 0, "policy sets 'min_secure_aggregation_partners' = 0"),
])
def test_a_partner_refuses_a_run_its_policy_forbids(tmp_path: Path, partners: int, floor: int,
                                                    dropouts: int, limit: str) -> None:
    # Prepare
    sites = _sites(tmp_path, partners, floor=floor)
    _open(sites)
    _, setup = _setup(sites, 0, 10)
    setup = SecaggSetup("run1", "kmeans", partners, dropouts, setup.request)

    # Execute / Assert: the refusal names the partner and the limit
    with pytest.raises(PolicyRefusedError, match="Partner 'p0'") as info:
        secagg_keys(setup, sites[0])
    assert limit in str(info.value)


def test_a_partner_refuses_a_declared_t_below_its_policy_and_releases_nothing(
        tmp_path: Path) -> None:
    # Prepare: p0 demands t >= 2; the run declares t = 1 with 4 partners
    sites = _sites(tmp_path, 4, extra="min_secure_aggregation_dropouts = 2\n")
    _open(sites)
    _, setup = _setup(sites, 1, 10)
    assert sites[0].policy.min_secure_aggregation_dropouts == 2

    # Execute / Assert: the refusal names the partner, the key and both values
    with pytest.raises(PolicyRefusedError, match="Partner 'p0'") as info:
        secagg_keys(_wire(SecaggSetup, setup), sites[0])
    message = str(info.value)
    assert "'min_secure_aggregation_dropouts' = 2" in message and "t = 1" in message
    # nothing released: no key advertised, no protocol state, no ledger event
    assert not (sites[0].state_dir / "secagg" / f"{setup.request.run_id.hex()}.json").exists()
    with Ledger(sites[0].state_dir / "ledger.sqlite") as book:
        assert book.events(run_id="run1", party="p0") == []


def test_a_partner_accepts_a_declared_t_equal_to_its_policy(tmp_path: Path) -> None:
    # Prepare: p0 demands t >= 1; the run declares exactly t = 1 with 4 partners
    sites = _sites(tmp_path, 4, extra="min_secure_aggregation_dropouts = 1\n")
    _open(sites)
    coord, setup = _setup(sites, 1, 10)

    # Execute: the whole key setup goes through
    _keys(sites, coord, setup)

    # Assert: p0 advertised its keys and holds the run's state
    assert (sites[0].state_dir / "secagg" / f"{setup.request.run_id.hex()}.json").is_file()


def test_a_partner_without_the_others_keys_refuses_at_key_setup(tmp_path: Path) -> None:
    # Prepare: no trusted key file
    sites = _sites(tmp_path, 3, trusted=False)
    _open(sites)
    _, setup = _setup(sites, 0, 10)

    # Execute / Assert: it says so before advertising any key
    with pytest.raises(SecureAggregationRefusedError, match="trusts the signing keys of 0"):
        secagg_keys(setup, sites[0])


def test_a_partner_trusting_other_names_refuses_to_share_its_key(tmp_path: Path) -> None:
    # Prepare: p0 trusts two keys, but not those of the run's other partners
    sites = _sites(tmp_path, 3)
    (tmp_path / "strangers").mkdir()
    strangers = _sites(tmp_path / "strangers", 2)
    trust_keys(sites[0].state_dir, {f"x{i}": public_key_hex(s.state_dir)
                                    for i, s in enumerate(strangers)})
    _open(sites)
    coord, setup = _setup(sites, 0, 10)
    adverts = [secagg_keys(setup, s) for s in sites]

    # Execute / Assert
    with pytest.raises(ProtocolError, match="no trusted signing key"):
        secagg_agree(coord.broadcast(adverts), sites[0])


@pytest.mark.parametrize(("floor", "extra", "partners", "limit"), [
    (0, "", 3, "'min_secure_aggregation_partners' = 0"),
    (5, "", 4, "needs at least 5"),
    (3, "min_secure_aggregation_dropouts = 1\n", 4, "'min_secure_aggregation_dropouts' = 1"),
], ids=["never", "too-few-partners", "t-too-small"])
def test_a_policy_demanding_partner_noise_refuses_the_announcement(
        tmp_path: Path, floor: int, extra: str, partners: int, limit: str) -> None:
    # Prepare: the run is announced under secure aggregation, declaring t = 0
    sites = _sites(tmp_path, partners, floor=floor, extra=extra)
    plan = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=1,
                       norm_bound=sites[0].spec.norm_bound)
    request = ProfileRequest(run_id="run1", spec_fingerprint=sites[0].spec.fingerprint(),
                             epsilon_target=1.0, delta=1e-6, stages=("kmeans",),
                             planned_events=plan.events(), min_segment_size=50, k=2,
                             noise="secagg", partners=partners, secagg_dropouts=0)

    # Execute / Assert: refused with its own error (the coordinator may fall back to
    # partner noise), nothing recorded; the same run with partner noise is accepted
    with pytest.raises(SecureAggregationRefusedError, match="Partner 'p0'") as info:
        profile(ProfileRequest.from_record(request.to_record()), sites[0])
    assert limit in str(info.value)
    with Ledger(sites[0].state_dir / "ledger.sqlite") as book:
        assert book.runs() == []
    profile(replace(request, run_id="run2", noise="partner"), sites[0])


def test_a_partner_refuses_swapped_keys(tmp_path: Path) -> None:
    # Prepare: the coordinator relays p1's advert with p2's keys
    sites = _sites(tmp_path, 3)
    _open(sites)
    coord, setup = _setup(sites, 0, 10)
    adverts = [secagg_keys(setup, s) for s in sites]
    forged = KeyAdvert("p1", adverts[2].mask_key, adverts[2].enc_key, adverts[1].signature)
    relay = coord.broadcast([adverts[0], forged, adverts[2]])

    # Execute / Assert
    with pytest.raises(ProtocolError, match="not signed by its trusted key"):
        secagg_agree(relay, sites[0])


def test_a_partner_refuses_a_threshold_that_t_colluders_reach(tmp_path: Path) -> None:
    # Prepare: 7 partners declaring t = 2. A threshold of 4 falls to 2 colluders and two
    # partners shown that everyone survived (each reveals a share of the other's seed) while
    # the rest sign a list dropping them; 8 is more than the partners
    sites = _sites(tmp_path, 7)
    _open(sites)

    def setup(threshold: int) -> SecaggSetup:
        coord = SecaggCoordinator([s.name for s in sites], threshold=threshold, bits=RING_BITS,
                                  dim=10, min_survivors=max(5, threshold))
        return SecaggSetup("run1", "kmeans", 7, 2, coord.setup)

    for threshold in (4, 8):
        # Execute / Assert: refused at key setup, before any key is made or saved
        with pytest.raises(ProtocolError, match=r"at least 2t \+ 1 = 5 .* at most the m = 7"):
            secagg_keys(_wire(SecaggSetup, setup(threshold)), sites[0])
    assert _state_files(sites[0]) == []
    secagg_keys(_wire(SecaggSetup, setup(6)), sites[0])


def test_a_partner_refuses_a_key_setup_it_opened_before(tmp_path: Path) -> None:
    # Prepare: a setup this partner answered (its keys made, its id noted in the ledger)
    sites = _sites(tmp_path, 3)
    _open(sites)
    _, setup = _setup(sites, 0, 10)
    secagg_keys(_wire(SecaggSetup, setup), sites[0])
    # Execute / Assert: the same id again -- even once its state file is gone -- is refused
    for path in (sites[0].state_dir / "secagg").glob("*.json"):
        if path.name != "partners.json":
            path.unlink()
    with pytest.raises(ProtocolError, match="was opened before"):
        secagg_keys(_wire(SecaggSetup, setup), sites[0])
    _, fresh = _setup(sites, 0, 10)
    secagg_keys(_wire(SecaggSetup, fresh), sites[0])


@pytest.mark.parametrize(("change", "refusal"), [
    ({"participants": ("p0", "p1")}, "2 participants; the plan needs 3"),
    ({"dim": 1}, "values do not fit masked vectors of 1"),
])
def test_a_refused_mask_request_uses_up_no_planned_release(tmp_path: Path, change: dict,
                                                           refusal: str) -> None:
    # Prepare: keys set up among 4 partners (t = 1: at least 3 per round); the start round
    sites = _sites(tmp_path, 4)
    plan = _open(sites)
    rnd, centers = plan.rounds[0], np.array([[-0.4, 0.6, 0.0, 0.0], [0.3, 0.0, 0.6, 0.0]])
    coord, setup = _setup(sites, 1, 2 * 5)
    _keys(sites, coord, setup)
    request = KMeansRequest(run_id="run1", spec_fingerprint=sites[0].spec.fingerprint(),
                            stage=rnd.stage, round=rnd.round, centers=centers,
                            sum_noise_multiplier=0.0, count_noise_multiplier=0.0)
    good = coord.mask_requests()["p0"]
    bad = replace(good, **change)

    # Execute: a request with too few participants or too short vectors, then the real one
    content = with_mask_request(request.to_record(), bad)
    with pytest.raises(ProtocolError, match=refusal):
        kmeans(KMeansRequest.from_record(content), sites[0], mask_request(content))
    with Ledger(sites[0].state_dir / "ledger.sqlite") as book:
        recorded = book.events(run_id="run1")
    content = with_mask_request(request.to_record(), good)
    kmeans(KMeansRequest.from_record(content), sites[0], mask_request(content))

    # Assert: the refusal recorded nothing; the release was still there to make
    assert recorded == []
    with Ledger(sites[0].state_dir / "ledger.sqlite") as book:
        assert len(book.events(run_id="run1")) == 2


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    """Another process holding ``path``'s exclusive lock until its stdin is closed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
         str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_message_waits_while_another_process_holds_its_runs_lock(tmp_path: Path) -> None:
    # Prepare: keys set up among 3 partners; another process's exclusive lock on p0's run
    sites = _sites(tmp_path, 3)
    _open(sites)
    coord, setup = _setup(sites, 0, 10)
    adverts = [_wire(KeyAdvert, secagg_keys(_wire(SecaggSetup, setup), s)) for s in sites]
    relay = _wire(KeyBroadcast, coord.broadcast(adverts))
    holder = _hold_lock(sites[0].state_dir / "secagg" / f"{setup.request.run_id.hex()}.lock")
    answers: list[KeysAgreed] = []

    # Execute: p0 handles the key agreement while the lock is held, then the holder exits
    worker = threading.Thread(target=lambda: answers.append(secagg_agree(relay, sites[0])))
    worker.start()
    worker.join(timeout=0.5)
    while_held = (worker.is_alive(), len(answers))
    holder.communicate("")
    worker.join(timeout=30)

    # Assert: the handler did not touch the run's state until the lock was free, then answered
    assert while_held == (True, 0)
    assert not worker.is_alive() and len(answers) == 1
    assert isinstance(_wire(KeysAgreed, answers[0]), KeysAgreed)


def test_a_partner_refuses_a_ring_its_secure_sums_are_not_planned_on(tmp_path: Path) -> None:
    sites = _sites(tmp_path, 3)
    _open(sites)
    _, setup = _setup(sites, 0, 10)
    small_ring = replace(setup, request=replace(setup.request, bits=40))
    with pytest.raises(ProtocolError, match="a ring of 2\\*\\*40"):
        secagg_keys(_wire(SecaggSetup, small_ring), sites[0])


def test_a_mask_request_of_another_stage_is_refused_before_anything_is_recorded(
        tmp_path: Path) -> None:
    # Prepare: keys set up for the k-means stage
    sites = _sites(tmp_path, 3)
    _open(sites)
    coord, setup = _setup(sites, 0, 10)
    _keys(sites, coord, setup)
    mask = coord.mask_requests()["p0"]
    parts = SecureSum((("gradient", 4, 0.0, 0.0),))

    # Execute / Assert: the stage's keys used for a logistic release
    with pytest.raises(ProtocolError, match="stage 'kmeans', not 'run1', 'logistic'"):
        masked_release(sites[0], mask, run_id="run1", stage="logistic", secure_sum=parts,
                       values=[np.zeros(4)], events=(), rng=np.random.default_rng(0))
    with Ledger(sites[0].state_dir / "ledger.sqlite") as book:
        assert book.events(run_id="run1") == []


def test_a_message_of_no_known_run_leaves_nothing_behind(tmp_path: Path) -> None:
    sites = _sites(tmp_path, 3)
    _open(sites)
    unknown = ConfirmRequest(run_id=os.urandom(16), round=0, survivors=("p0", "p1"),
                             dropped=("p2",))
    with pytest.raises(ProtocolError, match="belongs to no run this partner joined"):
        secagg_confirm(_wire(ConfirmRequest, unknown), sites[0])
    assert list((sites[0].state_dir / "secagg").glob("*.lock")) == []


def test_pruning_skips_a_state_file_another_run_renamed_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a stale file, and one that vanishes between the listing and its stat
    sites = _sites(tmp_path, 3)
    folder = sites[0].state_dir / "secagg"
    stale, moving = folder / ("ab" * 16 + ".json"), folder / ("tmp-" + "cd" * 16 + ".json")
    for path in (stale, moving):
        path.write_text("{}")
        os.utime(path, (0, 0))
    real_stat = Path.stat

    def stat(self: Path, **kwargs: object) -> os.stat_result:
        if self.name == moving.name:
            raise FileNotFoundError(self)
        return real_stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    # Execute / Assert: the stale file goes, the moving one is left to its run
    assert prune_state(sites[0]) == [stale]


def test_the_last_unmask_deletes_the_runs_secrets_durably_before_replying(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: an exact plan (a start and one Lloyd round) among 3 partners; p0's fsyncs
    # are recorded in its last unmask
    sites = _sites(tmp_path, 3)
    plan = _open(sites)
    coord, setup = _setup(sites, 0, 2 * (sites[0].spec.dim + 1))
    _keys(sites, coord, setup)
    state = sites[0].state_dir / "secagg" / f"{setup.request.run_id.hex()}.json"
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), state.exists()))

    # Execute: every planned round; p0's last unmask is watched
    centers = np.zeros((2, sites[0].spec.dim))
    for index, rnd in enumerate(plan.rounds):
        request = KMeansRequest(run_id="run1", spec_fingerprint=sites[0].spec.fingerprint(),
                                stage=rnd.stage, round=rnd.round, centers=centers,
                                sum_noise_multiplier=0.0, count_noise_multiplier=0.0)
        masks = coord.mask_requests()
        coord.collect_masked([_wire(SecaggMasked, kmeans(request, s, masks[s.name])).masked
                              for s in sites])
        unmask = coord.unmask_requests()
        if index == len(plan.rounds) - 1:
            monkeypatch.setattr(os, "fsync", fsync)
        replies = [secagg_unmask(_wire(UnmaskRequest, unmask[s.name]), s) for s in sites[:1]]
        monkeypatch.setattr(os, "fsync", real_fsync)
        replies += [secagg_unmask(_wire(UnmaskRequest, unmask[s.name]), s) for s in sites[1:]]
        coord.unmask([_wire(UnmaskReply, r) for r in replies])

    # Assert: before the reply left, the folder was synced with the state already gone
    assert (str(state.parent), False) in synced
    assert not state.exists()


def test_an_idle_run_whose_message_is_being_handled_is_not_pruned(tmp_path: Path) -> None:
    # Prepare: a run's state idle for 2 days, its lock held by a process handling a message
    sites = _sites(tmp_path, 3)
    folder = sites[0].state_dir / "secagg"
    state = folder / ("ab" * 16 + ".json")
    state.write_text("{}")
    os.utime(state, (0, 0))
    holder = _hold_lock(state.with_suffix(".lock"))

    # Execute: a prune while the lock is held, then one after it is free
    while_held = prune_state(sites[0])
    holder.communicate("")
    after = prune_state(sites[0])

    # Assert: the handled run keeps its state; once free, the state and its lock go
    assert while_held == [] and after == [state, state.with_suffix(".lock")]
    assert not state.exists() and not state.with_suffix(".lock").exists()
