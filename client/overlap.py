"""The partner's three overlap steps (see :mod:`fedprofile.protocol.overlap`).

A partner only ever sends its pseudonyms hashed to curve points, padded with dummy points
to a public size bucket, blinded with a fresh per-query key and shuffled. Before it sends
anything that lets the count be computed it checks the set sizes and records its share of
the release in its own ledger; the initiator adds the noise and suppresses a count below
the stricter of the two partners' minimums. Each partner also releases, once per run, a
noisy count of its own customers (charged like an overlap count), which the report
divides by; its exact size never leaves it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import MutableMapping

import numpy as np

from fedprofile.client.site import PartnerSite
from fedprofile.contract.customers import ID_COLUMN
from fedprofile.errors import DataError, ProtocolError
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent, PrivacyEvent
from fedprofile.privacy.mechanisms import secure_rng
from fedprofile.privacy.overlap_guard import (
    OVERLAP_STAGE,
    SIZE_COMPONENT,
    authorize_overlap,
    check_set_sizes,
    overlap_component,
)
from fedprofile.privacy.psi import (
    BlindingKey,
    count_common,
    count_distinct,
    discrete_gaussian,
    hash_to_points,
    pad_points,
    padded_size,
)
from fedprofile.protocol.overlap import (
    OverlapBlindReply,
    OverlapCountReply,
    OverlapQuery,
    OverlapRespondReply,
    OverlapStep,
)

__all__ = ["MAX_OPEN_QUERIES", "overlap_blind", "overlap_count", "overlap_event", "overlap_respond"]

KeyStore = MutableMapping[str, bytes]
"""The node's own state between steps: the initiator's fresh keys, the run's noisy size."""
MAX_OPEN_QUERIES = 1024
"""Most overlap queries an initiator keeps blinded and not yet counted (its state's size)."""
_BOUND = "binding:"


def overlap_event(query: OverlapQuery, component: str | None = None) -> PrivacyEvent:
    """The ledger event of one overlap count with ``query.counterpart`` (sensitivity 1).

    With ``component`` :data:`SIZE_COMPONENT`: the partner's own noisy customer count.
    """
    component = component or overlap_component(query.counterpart)
    if query.noise_multiplier == 0:
        return NonPrivateEvent(sensitivity=1.0, stage=OVERLAP_STAGE, round=0,
                               component=component)
    return GaussianEvent(noise_multiplier=query.noise_multiplier, sensitivity=1.0,
                         stage=OVERLAP_STAGE, round=0, component=component)


def _binding(site: PartnerSite, query: OverlapQuery) -> bytes:
    """What both sides of a query must agree on, mixed into the hash of every pseudonym.

    The run, the query, the noise and the pair's names: if the coordinator tells the two
    partners different values (a smaller noise to the one that adds it, another name to
    the one that counts its daily queries), their points never match and the count is 0,
    independent of the other partner's customers.
    """
    pair = sorted((site.name, query.counterpart))
    return json.dumps([query.run_id, query.query_id, repr(float(query.noise_multiplier)),
                       pair]).encode()


def _bound(query: OverlapQuery) -> str:
    """The state slot of the binding an initiator blinded its set for (step 1 to step 3)."""
    return f"{_BOUND}{query.query_id}"


def _points(site: PartnerSite, query: OverlapQuery) -> np.ndarray:
    """The partner's distinct keyed pseudonyms as curve points bound to ``query``."""
    if not site.key_id:
        raise DataError("Overlap needs keyed pseudonyms, and this partner has no "
                        "pseudonymisation key (an [identity] section and a key).")
    return hash_to_points(site.customers()[ID_COLUMN].dropna().astype(str),
                          context=_binding(site, query))


def _check(site: PartnerSite, query: OverlapQuery) -> None:
    site.check_contract(query.spec_fingerprint)
    if query.counterpart == site.name:
        raise ProtocolError("An overlap query names this partner as its own counterpart.")
    site.guard.check_announced(run_id=query.run_id, stage=OVERLAP_STAGE)


def _noisy_size(site: PartnerSite, query: OverlapQuery, own: int, store: KeyStore
                ) -> tuple[int, tuple[PrivacyEvent, ...]]:
    """The partner's noisy customer count and the event to charge (none once released).

    Drawn once per run and kept in the node's state; the caller stores it
    (:func:`_keep_size`) only after the charge is recorded.
    """
    slot = f"customers:{query.run_id}"
    if slot in store:
        return int.from_bytes(store[slot], "little"), ()
    tag = np.frombuffer(SIZE_COMPONENT.encode().ljust(64, b"-"), dtype=np.uint8)
    rng = site.rng(run_id=query.run_id, stage=OVERLAP_STAGE, round=0,
                   request=tag.astype(float))
    noisy = max(own + discrete_gaussian(query.noise_multiplier, rng), 0)
    return noisy, (overlap_event(query, SIZE_COMPONENT),)


def _keep_size(query: OverlapQuery, noisy: int, store: KeyStore) -> None:
    store[f"customers:{query.run_id}"] = noisy.to_bytes(8, "little")


def overlap_blind(step: OverlapStep, site: PartnerSite, keys: KeyStore) -> OverlapBlindReply:
    """Step 1 (initiator): blind the padded own set with a fresh key kept for step 3."""
    query = step.query
    _check(site, query)
    if sum(name.startswith(_BOUND) for name in keys) >= MAX_OPEN_QUERIES:
        raise ProtocolError(f"This partner already holds {MAX_OPEN_QUERIES} overlap queries "
                            "blinded and not yet counted; it opens no more.")
    points = _points(site, query)
    check_set_sizes(site.guard, run_id=query.run_id, own=len(points), counterpart=len(points))
    key = BlindingKey()
    keys[query.query_id] = key.to_bytes()
    keys[_bound(query)] = _binding(site, query)
    return OverlapBlindReply(blinded=key.blind(pad_points(points), secure_rng()),
                             min_overlap_size=site.policy.min_overlap_size)


def overlap_respond(step: OverlapStep, site: PartnerSite, store: KeyStore
                    ) -> OverlapRespondReply:
    """Step 2 (responder): blind both sets, then record the release and reply.

    A set with repeated points is refused: repeats would let the initiator tell which of
    its chosen pseudonyms matched from the exact count it computes.
    """
    query = step.query
    _check(site, query)
    assert step.blinded is not None  # checked by OverlapStep.from_record
    points = _points(site, query)
    check_set_sizes(site.guard, run_id=query.run_id, own=len(points),
                    counterpart=len(step.blinded))
    key, rng = BlindingKey(), secure_rng()
    double = key.blind(step.blinded, rng)
    if count_distinct(double) != len(double):
        raise ProtocolError("The counterpart's blinded set repeats points; each customer may "
                            "appear once.")
    own = key.blind(pad_points(points), rng)
    customers, size_events = _noisy_size(site, query, len(points), store)
    events = (overlap_event(query), *size_events)
    authorize_overlap(site.guard, run_id=query.run_id, counterpart=query.counterpart,
                      events=events)
    _keep_size(query, customers, store)
    return OverlapRespondReply(double=double, own=own,
                               min_overlap_size=site.policy.min_overlap_size,
                               noisy_customers=customers, events=events)


def overlap_count(step: OverlapStep, site: PartnerSite, keys: KeyStore) -> OverlapCountReply:
    """Step 3 (initiator): count, record, noise, suppress below the stricter minimum.

    The counterpart's minimum (``step.min_overlap_size``) reaches this partner through the
    coordinator; the reply echoes the floor applied.
    """
    query = step.query
    _check(site, query)
    raw, blinded_for = keys.pop(query.query_id, None), keys.pop(_bound(query), None)
    if raw is None:
        raise ProtocolError("No open overlap query with this id at this partner (each query "
                            "is counted once).")
    if blinded_for != _binding(site, query):
        raise ProtocolError("The count step does not match the query this partner blinded "
                            "its set for (its run, noise multiplier or counterpart differ).")
    assert step.blinded is not None and step.counterpart_points is not None
    own_size = len(_points(site, query))
    if len(step.blinded) != padded_size(own_size):
        raise ProtocolError("The double-blinded set does not have the size of this partner's "
                            "padded set.")
    check_set_sizes(site.guard, run_id=query.run_id, own=own_size,
                    counterpart=len(step.counterpart_points))
    for name, points in (("doubly blinded", step.blinded),
                         ("counterpart's", step.counterpart_points)):
        if count_distinct(points) != len(points):  # a repeat would count one customer often
            raise ProtocolError(f"The {name} set repeats points; each customer may appear "
                                "once.")
    key = BlindingKey.from_bytes(raw)
    exact = count_common(step.blinded, key.blind(step.counterpart_points))
    customers, size_events = _noisy_size(site, query, own_size, keys)
    digest = hashlib.sha256(query.query_id.encode() + step.blinded.tobytes()).digest()
    rng = site.rng(run_id=query.run_id, stage=OVERLAP_STAGE, round=0,
                   request=np.frombuffer(digest, dtype=np.uint8).astype(float))
    noise = discrete_gaussian(query.noise_multiplier, rng)  # drawn before anything is charged
    events = (overlap_event(query), *size_events)
    authorize_overlap(site.guard, run_id=query.run_id, counterpart=query.counterpart,
                      events=events)
    _keep_size(query, customers, keys)
    noisy = max(exact + noise, 0)
    floor = max(site.policy.min_overlap_size, step.min_overlap_size)
    suppressed = noisy < floor
    return OverlapCountReply(count=0 if suppressed else noisy, suppressed=suppressed,
                             floor=floor, noisy_customers=customers, events=events)
