"""The partner's overlap steps driven directly, as the coordinator (honest or not) would.

Two small partners share 30 customers. Each test runs the three PSI steps by hand and checks
exactness, suppression, the policy's refusals (small sets, the daily query limit, a
forbidden stage) and that both ledgers are charged before the count is released.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedprofile.client.app import profile
from fedprofile.client.overlap import overlap_blind, overlap_count, overlap_respond
from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.contract.customers import ID_COLUMN
from fedprofile.errors import PolicyRefusedError, ProtocolError
from fedprofile.io.tables import write_table
from fedprofile.privacy.keys import generate_key, write_key
from fedprofile.privacy.psi import overlap_sigma, padded_size
from fedprofile.protocol import MessageKind, ProfileRequest
from fedprofile.protocol.overlap import (
    OverlapCountReply,
    OverlapQuery,
    OverlapRespondReply,
    OverlapStep,
)

SHARED = 30
OPEN = "allow_non_private = true\nmin_overlap_size = 0\nmax_epsilon_per_run = inf\n" \
       "total_epsilon = inf\nmin_query_set_size = 50\n"


@pytest.fixture(scope="module")
def partners(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from fedprofile.presets.datasets import load_preset

    preset = load_preset("retail-transactions")
    frame = preset.frame
    folder = tmp_path_factory.mktemp("overlap")
    germany = frame.loc[frame["partner_region"] == "Germany"]
    france = frame.loc[frame["partner_region"] == "France"]
    shared = germany["email"].dropna().unique()[:SHARED]
    france = pd.concat([france, germany.loc[germany["email"].isin(shared)]])
    key = write_key(generate_key(key_id="k-test"), folder / "federation.key")
    return {"spec": str(preset.spec_path), "key": str(key),
            "Germany": write_table(germany, folder / "germany.csv"),
            "France": write_table(france, folder / "france.csv")}


def _site(tmp_path: Path, partners: dict[str, object], name: str, policy: str = OPEN
          ) -> PartnerSite:
    home = tmp_path / name
    home.mkdir(parents=True, exist_ok=True)
    (home / "policy.toml").write_text(policy, encoding="utf-8")
    return PartnerSite(NodeConfig(data_path=str(partners[name]), spec=str(partners["spec"]),
                                  partner_name=name, state_dir=str(home / "state"),
                                  policy=str(home / "policy.toml"), key=str(partners["key"]),
                                  output_dir=str(home / "out"), noise_seed=0,
                                  simulation=True))


def _announce(*sites: PartnerSite, run_id: str = "run1") -> None:
    for site in sites:
        profile(ProfileRequest(run_id=run_id, spec_fingerprint=site.spec.fingerprint(),
                               epsilon_target=1.0, delta=1e-6, stages=("overlap",),
                               planned_events=(), min_segment_size=0, k=0), site)


Stores = dict[str, dict[str, bytes]]


def _steps(a: PartnerSite, b: PartnerSite, sigma: float, run_id: str = "run1",
           stores: Stores | None = None) -> OverlapCountReply:
    """The three steps; ``stores`` holds each node's own state (fresh per call if None)."""
    stores = {} if stores is None else stores
    keys, b_store = stores.setdefault(a.name, {}), stores.setdefault(b.name, {})
    qid = uuid.uuid4().hex
    qa = OverlapQuery(run_id, a.spec.fingerprint(), qid, b.name, sigma)
    qb = OverlapQuery(run_id, b.spec.fingerprint(), qid, a.name, sigma)
    first = overlap_blind(OverlapStep(MessageKind.OVERLAP_BLIND, qa), a, keys)
    second = overlap_respond(OverlapStep(MessageKind.OVERLAP_RESPOND, qb,
                                         blinded=first.blinded), b, b_store)
    return overlap_count(OverlapStep(MessageKind.OVERLAP_COUNT, qa, blinded=second.double,
                                     counterpart_points=second.own,
                                     min_overlap_size=second.min_overlap_size), a, keys)


def _true(a: PartnerSite, b: PartnerSite) -> int:
    return len(set(a.customers()[ID_COLUMN]) & set(b.customers()[ID_COLUMN]))


def test_non_private_count_is_exact(tmp_path: Path, partners: dict[str, object]) -> None:
    a, b = _site(tmp_path, partners, "Germany"), _site(tmp_path, partners, "France")
    _announce(a, b)
    reply = _steps(a, b, sigma=0.0)
    assert reply.count == _true(a, b) > 0 and not reply.suppressed


def test_noisy_count_is_charged_to_both_ledgers(tmp_path: Path,
                                                partners: dict[str, object]) -> None:
    a, b = _site(tmp_path, partners, "Germany"), _site(tmp_path, partners, "France")
    _announce(a, b)
    sigma = overlap_sigma(1.0, 1e-6)
    reply = _steps(a, b, sigma=sigma)
    assert abs(reply.count - _true(a, b)) <= 6 * sigma
    for site, other in ((a, "France"), (b, "Germany")):
        events = site.ledger.events(party=site.name)
        assert [(e.stage, e.component) for e in events] == [("overlap", f"count:{other}"),
                                                             ("overlap", "customers")]
        assert [e.sigma for e in events] == pytest.approx([sigma, sigma])


def test_sets_are_padded_and_exact_sizes_stay_home(tmp_path: Path,
                                                   partners: dict[str, object]) -> None:
    a, b = _site(tmp_path, partners, "Germany"), _site(tmp_path, partners, "France")
    _announce(a, b)
    qa = OverlapQuery("run1", a.spec.fingerprint(), "q1", b.name, 0.0)
    qb = OverlapQuery("run1", b.spec.fingerprint(), "q1", a.name, 0.0)
    keys: dict[str, bytes] = {}
    first = overlap_blind(OverlapStep(MessageKind.OVERLAP_BLIND, qa), a, keys)
    second = overlap_respond(OverlapStep(MessageKind.OVERLAP_RESPOND, qb,
                                         blinded=first.blinded), b, {})
    n_a, n_b = a.customers()[ID_COLUMN].nunique(), b.customers()[ID_COLUMN].nunique()
    assert (len(first.blinded), len(second.own)) == (padded_size(n_a), padded_size(n_b))
    assert len(first.blinded) > n_a and len(second.own) > n_b  # these sizes are off-bucket
    third = overlap_count(OverlapStep(MessageKind.OVERLAP_COUNT, qa, blinded=second.double,
                                      counterpart_points=second.own), a, keys)
    assert third.count == _true(a, b)  # the dummies match nothing
    assert (third.noisy_customers, second.noisy_customers) == (n_a, n_b)  # sigma 0: exact


def test_the_noisy_size_is_charged_once_per_run(tmp_path: Path,
                                                partners: dict[str, object]) -> None:
    a, b = _site(tmp_path, partners, "Germany"), _site(tmp_path, partners, "France")
    _announce(a, b)
    stores: Stores = {}
    first = _steps(a, b, sigma=3.0, stores=stores)
    second = _steps(a, b, sigma=3.0, stores=stores)
    assert first.noisy_customers == second.noisy_customers  # one release, reused
    for site in (a, b):
        components = [e.component for e in site.ledger.events(party=site.name)]
        assert components.count("customers") == 1 and len(components) == 3


def test_stricter_minimum_suppresses(tmp_path: Path, partners: dict[str, object]) -> None:
    a = _site(tmp_path, partners, "Germany")
    b = _site(tmp_path, partners, "France", OPEN.replace("min_overlap_size = 0",
                                                         "min_overlap_size = 500"))
    _announce(a, b)
    reply = _steps(a, b, sigma=0.0)
    assert reply.suppressed and reply.count == 0


def test_a_small_set_is_refused_before_any_charge(tmp_path: Path,
                                                  partners: dict[str, object]) -> None:
    a = _site(tmp_path, partners, "Germany")
    b = _site(tmp_path, partners, "France",
              OPEN.replace("min_query_set_size = 50", "min_query_set_size = 1000"))
    _announce(a, b)
    with pytest.raises(PolicyRefusedError, match="min_query_set_size of 1000 cust") as info:
        _steps(a, b, sigma=1.0)
    assert "@" not in str(info.value)
    assert b.ledger.events() == [] and a.ledger.events() == []


def test_a_set_of_one_is_refused(tmp_path: Path, partners: dict[str, object]) -> None:
    b = _site(tmp_path, partners, "France")
    _announce(b)
    query = OverlapQuery("run1", b.spec.fingerprint(), "q1", "Germany", 1.0)
    one = np.frombuffer(bytes(range(1, 33)), dtype=np.uint8).reshape(1, 32)
    with pytest.raises(PolicyRefusedError, match="the counterpart's query set is below"):
        overlap_respond(OverlapStep(MessageKind.OVERLAP_RESPOND, query, blinded=one), b, {})
    assert b.ledger.events() == []


def test_queries_beyond_the_daily_limit_are_refused(tmp_path: Path,
                                                    partners: dict[str, object]) -> None:
    a = _site(tmp_path, partners, "Germany")
    b = _site(tmp_path, partners, "France", OPEN + "max_overlap_queries_per_day = 1\n")
    _announce(a, b)
    _steps(a, b, sigma=2.0)
    _announce(a, b, run_id="run2")
    with pytest.raises(PolicyRefusedError, match="query limit with 'Germany'"):
        _steps(a, b, sigma=2.0, run_id="run2")
    counts = [e for e in b.ledger.events(party="France") if e.component.startswith("count:")]
    assert len(counts) == 1


def test_a_forbidden_stage_and_a_replayed_count_are_refused(
        tmp_path: Path, partners: dict[str, object]) -> None:
    a = _site(tmp_path, partners, "Germany")
    b = _site(tmp_path, partners, "France",
              OPEN + 'allowed_stages = ["profile", "kmeans"]\n')
    with pytest.raises(PolicyRefusedError, match="'overlap' is not in its allowed stages"):
        _announce(b)
    _announce(a)
    keys: dict[str, bytes] = {}
    query = OverlapQuery("run1", a.spec.fingerprint(), "q2", "France", 0.0)
    with pytest.raises(ProtocolError, match="No open overlap query"):
        overlap_count(OverlapStep(MessageKind.OVERLAP_COUNT, query,
                                  blinded=np.zeros((1, 32), np.uint8),
                                  counterpart_points=np.zeros((1, 32), np.uint8)), a, keys)


def _first_two(a: PartnerSite, b: PartnerSite, qa: OverlapQuery, qb: OverlapQuery,
               keys: dict[str, bytes]) -> OverlapRespondReply:
    first = overlap_blind(OverlapStep(MessageKind.OVERLAP_BLIND, qa), a, keys)
    return overlap_respond(OverlapStep(MessageKind.OVERLAP_RESPOND, qb, blinded=first.blinded),
                           b, {})


@pytest.mark.parametrize("lie", ["noise", "name"])
def test_values_told_differently_to_each_side_match_nothing(
        tmp_path: Path, partners: dict[str, object], lie: str) -> None:
    # A dishonest coordinator tells B (who is charged) a large noise but A (who adds it)
    # none, or tells B another name for A so that B's daily limit counts a fresh name.
    a, b = _site(tmp_path, partners, "Germany"), _site(tmp_path, partners, "France")
    _announce(a, b)
    qa = OverlapQuery("run1", a.spec.fingerprint(), "q1", b.name, 0.0)
    qb = OverlapQuery("run1", b.spec.fingerprint(), "q1",
                      "germany" if lie == "name" else a.name, 8.0 if lie == "noise" else 0.0)
    keys: dict[str, bytes] = {}
    second = _first_two(a, b, qa, qb, keys)
    third = overlap_count(OverlapStep(MessageKind.OVERLAP_COUNT, qa, blinded=second.double,
                                      counterpart_points=second.own), a, keys)
    assert _true(a, b) > 0 and third.count == 0  # nothing of B's customers in the count


def test_repeated_points_are_refused_before_any_charge(tmp_path: Path,
                                                       partners: dict[str, object]) -> None:
    # A dishonest initiator repeats target i i times, to read which matched from its
    # exact count.
    a, b = _site(tmp_path, partners, "Germany"), _site(tmp_path, partners, "France")
    _announce(a, b)
    qa = OverlapQuery("run1", a.spec.fingerprint(), "q1", b.name, 1.0)
    qb = OverlapQuery("run1", b.spec.fingerprint(), "q1", a.name, 1.0)
    first = overlap_blind(OverlapStep(MessageKind.OVERLAP_BLIND, qa), a, {})
    repeated = np.concatenate([first.blinded[:60], first.blinded[:60]])
    with pytest.raises(ProtocolError, match="repeats points"):
        overlap_respond(OverlapStep(MessageKind.OVERLAP_RESPOND, qb, blinded=repeated), b, {})
    assert b.ledger.events() == []


def test_an_invalid_point_is_refused_before_any_charge(tmp_path: Path,
                                                       partners: dict[str, object]) -> None:
    a, b = _site(tmp_path, partners, "Germany"), _site(tmp_path, partners, "France")
    _announce(a, b)
    qa = OverlapQuery("run1", a.spec.fingerprint(), "q1", b.name, 1.0)
    qb = OverlapQuery("run1", b.spec.fingerprint(), "q1", a.name, 1.0)
    first = overlap_blind(OverlapStep(MessageKind.OVERLAP_BLIND, qa), a, {})
    broken = first.blinded.copy()
    broken[0] = 0  # a low-order point
    with pytest.raises(ProtocolError, match="not a valid curve point"):
        overlap_respond(OverlapStep(MessageKind.OVERLAP_RESPOND, qb, blinded=broken), b, {})
    assert b.ledger.events() == []


def test_count_and_size_are_authorised_together(tmp_path: Path,
                                                partners: dict[str, object]) -> None:
    capped = OPEN.replace("max_epsilon_per_run = inf", "max_epsilon_per_run = 1.0")
    a = _site(tmp_path, partners, "Germany")
    b = _site(tmp_path, partners, "France", capped)
    _announce(a, b)
    sigma = overlap_sigma(1.0, 1e-6)  # one release fits epsilon 1; the size would not
    with pytest.raises(PolicyRefusedError, match="above its limit of 1 per run"):
        _steps(a, b, sigma=sigma)
    assert b.ledger.events() == []  # neither charge is kept
    _announce(a, b, run_id="run2")
    _steps(a, b, sigma=1.5 * sigma, run_id="run2")  # both fit
    assert [e.component for e in b.ledger.events()] == ["count:Germany", "customers"]


def test_a_set_larger_than_the_bound_is_refused_from_its_header() -> None:
    import io

    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

    from fedprofile.protocol.overlap import MAX_SET_POINTS

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (MAX_SET_POINTS + 1, 32)})
    query = OverlapQuery("run1", "f" * 64, "q1", "Germany", 1.0)
    record = OverlapStep(MessageKind.OVERLAP_RESPOND, query,
                         blinded=np.zeros((1, 32), np.uint8)).to_record()
    record["arrays"] = ArrayRecord({"blinded-points": Array(
        dtype="uint8", shape=(MAX_SET_POINTS + 1, 32), stype="numpy.ndarray",
        data=buffer.getvalue())})
    assert isinstance(record["config"], ConfigRecord) and isinstance(record, RecordDict)
    with pytest.raises(ProtocolError, match=f"at most {MAX_SET_POINTS * 32}"):
        OverlapStep.from_record(record, MessageKind.OVERLAP_RESPOND)


def test_a_count_step_cannot_be_replayed(tmp_path: Path, partners: dict[str, object]) -> None:
    a, b = _site(tmp_path, partners, "Germany"), _site(tmp_path, partners, "France")
    _announce(a, b)
    qa = OverlapQuery("run1", a.spec.fingerprint(), "q1", b.name, 1.0)
    qb = OverlapQuery("run1", b.spec.fingerprint(), "q1", a.name, 1.0)
    keys: dict[str, bytes] = {}
    second = _first_two(a, b, qa, qb, keys)
    step = OverlapStep(MessageKind.OVERLAP_COUNT, qa, blinded=second.double,
                       counterpart_points=second.own)
    overlap_count(step, a, keys)
    with pytest.raises(ProtocolError, match="No open overlap query"):
        overlap_count(step, a, keys)


@pytest.mark.parametrize("change", [{"noise_multiplier": 0.5}, {"counterpart": "France2"},
                                    {"run_id": "run2"}],
                         ids=["smaller-noise", "renamed-counterpart", "other-run"])
def test_a_count_step_unlike_the_query_blinded_at_step_one_is_refused(
        tmp_path: Path, partners: dict[str, object], change: dict) -> None:
    # A dishonest coordinator keeps steps 1 and 2 consistent (B charged at sigma 50) and
    # tells A at step 3 a smaller noise, or a new name that its daily limit has not seen.
    a, b = _site(tmp_path, partners, "Germany"), _site(tmp_path, partners, "France")
    _announce(a, b)
    _announce(a, b, run_id="run2")
    qa = OverlapQuery("run1", a.spec.fingerprint(), "q1", b.name, 50.0)
    qb = OverlapQuery("run1", b.spec.fingerprint(), "q1", a.name, 50.0)
    keys: dict[str, bytes] = {}
    second = _first_two(a, b, qa, qb, keys)
    with pytest.raises(ProtocolError, match="does not match the query this partner blinded"):
        overlap_count(OverlapStep(MessageKind.OVERLAP_COUNT, replace(qa, **change),
                                  blinded=second.double, counterpart_points=second.own), a, keys)
    assert a.ledger.events() == []


@pytest.mark.parametrize("which", ["blinded", "counterpart_points"])
def test_repeated_points_at_the_count_step_are_refused_before_any_charge(
        tmp_path: Path, partners: dict[str, object], which: str) -> None:
    # One double-blinded row repeated to the padded size would count one of A's customers
    # that many times, at a charged sensitivity of 1.
    a, b = _site(tmp_path, partners, "Germany"), _site(tmp_path, partners, "France")
    _announce(a, b)
    qa = OverlapQuery("run1", a.spec.fingerprint(), "q1", b.name, 5.0)
    qb = OverlapQuery("run1", b.spec.fingerprint(), "q1", a.name, 5.0)
    keys: dict[str, bytes] = {}
    second = _first_two(a, b, qa, qb, keys)
    points = {"blinded": second.double, "counterpart_points": second.own}
    points[which] = np.repeat(points[which][:1], len(points[which]), axis=0)
    with pytest.raises(ProtocolError, match="repeats points"):
        overlap_count(OverlapStep(MessageKind.OVERLAP_COUNT, qa, **points), a, keys)
    assert a.ledger.events() == []


def test_an_absurd_noise_multiplier_is_refused_when_decoded() -> None:
    from fedprofile.protocol.overlap import MAX_OVERLAP_SIGMA

    query = OverlapQuery("run1", "f" * 64, "q1", "Germany", 10 * MAX_OVERLAP_SIGMA)
    record = OverlapStep(MessageKind.OVERLAP_BLIND, query).to_record()
    with pytest.raises(ProtocolError, match="'noise-multiplier' must be at most"):
        OverlapStep.from_record(record, MessageKind.OVERLAP_BLIND)


def test_an_initiator_keeps_a_bounded_number_of_open_queries(
        tmp_path: Path, partners: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    # Step 1 alone charges nothing, so a coordinator could open queries without end.
    import fedprofile.client.overlap as overlap

    monkeypatch.setattr(overlap, "MAX_OPEN_QUERIES", 2)
    a = _site(tmp_path, partners, "Germany")
    _announce(a)
    keys: dict[str, bytes] = {}
    steps = [OverlapStep(MessageKind.OVERLAP_BLIND,
                         OverlapQuery("run1", a.spec.fingerprint(), qid, "France", 1.0))
             for qid in ("q1", "q2", "q3")]
    for step in steps[:2]:
        overlap_blind(step, a, keys)
    with pytest.raises(ProtocolError, match="already holds 2 overlap queries"):
        overlap_blind(steps[2], a, keys)
    assert sorted(k for k in keys if not k.startswith("binding:")) == ["q1", "q2"]
