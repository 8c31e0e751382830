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

__all__ = ["overlap_blind", "overlap_count", "overlap_event", "overlap_respond"]

KeyStore = MutableMapping[str, bytes]
"""The node's own state between steps: the initiator's fresh keys, the run's noisy size."""


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


def _points(site: PartnerSite) -> np.ndarray:
    """The partner's distinct keyed pseudonyms as curve points."""
    if not site.key_id:
        raise DataError("Overlap needs keyed pseudonyms, and this partner has no "
                        "pseudonymisation key (an [identity] section and a key).")
    return hash_to_points(site.customers()[ID_COLUMN].dropna().astype(str))


def _check(site: PartnerSite, query: OverlapQuery) -> None:
    site.check_contract(query.spec_fingerprint)
    if query.counterpart == site.name:
        raise ProtocolError("An overlap query names this partner as its own counterpart.")
    site.guard.check_announced(run_id=query.run_id, stage=OVERLAP_STAGE)


def _noisy_size(site: PartnerSite, query: OverlapQuery, own: int, store: KeyStore
                ) -> tuple[int, tuple[PrivacyEvent, ...]]:
    """The partner's noisy customer count: drawn and charged once per run, then reused."""
    slot = f"customers:{query.run_id}"
    if slot in store:
        return int.from_bytes(store[slot], "little"), ()
    event = overlap_event(query, SIZE_COMPONENT)
    authorize_overlap(site.guard, run_id=query.run_id, counterpart=None, event=event)
    tag = np.frombuffer(SIZE_COMPONENT.encode().ljust(64, b"-"), dtype=np.uint8)
    rng = site.rng(run_id=query.run_id, stage=OVERLAP_STAGE, round=0,
                   request=tag.astype(float))
    noisy = max(own + discrete_gaussian(query.noise_multiplier, rng), 0)
    store[slot] = noisy.to_bytes(8, "little")
    return noisy, (event,)


def overlap_blind(step: OverlapStep, site: PartnerSite, keys: KeyStore) -> OverlapBlindReply:
    """Step 1 (initiator): blind the padded own set with a fresh key kept for step 3."""
    query = step.query
    _check(site, query)
    points = _points(site)
    check_set_sizes(site.guard, run_id=query.run_id, own=len(points), counterpart=len(points))
    key = BlindingKey()
    keys[query.query_id] = key.to_bytes()
    return OverlapBlindReply(blinded=key.blind(pad_points(points), secure_rng()),
                             min_overlap_size=site.policy.min_overlap_size)


def overlap_respond(step: OverlapStep, site: PartnerSite, store: KeyStore
                    ) -> OverlapRespondReply:
    """Step 2 (responder): record the release, then double-blind and blind the own set."""
    query = step.query
    _check(site, query)
    assert step.blinded is not None  # checked by OverlapStep.from_record
    points = _points(site)
    check_set_sizes(site.guard, run_id=query.run_id, own=len(points),
                    counterpart=len(step.blinded))
    event = overlap_event(query)
    authorize_overlap(site.guard, run_id=query.run_id, counterpart=query.counterpart,
                      event=event)
    customers, size_events = _noisy_size(site, query, len(points), store)
    key, rng = BlindingKey(), secure_rng()
    return OverlapRespondReply(double=key.blind(step.blinded, rng),
                               own=key.blind(pad_points(points), rng),
                               min_overlap_size=site.policy.min_overlap_size,
                               noisy_customers=customers, events=(event, *size_events))


def overlap_count(step: OverlapStep, site: PartnerSite, keys: KeyStore) -> OverlapCountReply:
    """Step 3 (initiator): count, record, noise, suppress below the stricter minimum."""
    query = step.query
    _check(site, query)
    raw = keys.pop(query.query_id, None)
    if raw is None:
        raise ProtocolError("No open overlap query with this id at this partner (each query "
                            "is counted once).")
    assert step.blinded is not None and step.counterpart_points is not None
    own_size = len(_points(site))
    if len(step.blinded) != padded_size(own_size):
        raise ProtocolError("The double-blinded set does not have the size of this partner's "
                            "padded set.")
    check_set_sizes(site.guard, run_id=query.run_id, own=own_size,
                    counterpart=len(step.counterpart_points))
    key = BlindingKey.from_bytes(raw)
    exact = count_common(step.blinded, key.blind(step.counterpart_points))
    event = overlap_event(query)
    authorize_overlap(site.guard, run_id=query.run_id, counterpart=query.counterpart,
                      event=event)
    tag = np.frombuffer(query.query_id.encode().ljust(64, b"-"), dtype=np.uint8)
    rng = site.rng(run_id=query.run_id, stage=OVERLAP_STAGE, round=0,
                   request=tag.astype(float))
    noisy = max(exact + discrete_gaussian(query.noise_multiplier, rng), 0)
    floor = max(site.policy.min_overlap_size, step.min_overlap_size)
    suppressed = noisy < floor
    customers, size_events = _noisy_size(site, query, own_size, keys)
    return OverlapCountReply(count=0 if suppressed else noisy, suppressed=suppressed,
                             noisy_customers=customers, events=(event, *size_events))
