"""A partner's checks before it takes part in one overlap (PSI cardinality) query.

An overlap count is released once per query and charged to **both** partners: each one
authorises and records its own release here, in one ledger transaction, before it sends
anything that lets the count be computed. A partner refuses a set (its own or the
counterpart's) below its ``min_query_set_size`` and more than its
``max_overlap_queries_per_day`` queries with the same counterpart per UTC day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from fedprofile.privacy.events import PrivacyEvent
from fedprofile.privacy.ledger import LedgerTransaction
from fedprofile.privacy.policy import PartnerGuard, PolicyRefusal

__all__ = ["OVERLAP_STAGE", "SIZE_COMPONENT", "authorize_overlap", "check_set_sizes",
           "overlap_component"]

OVERLAP_STAGE = "overlap"
SIZE_COMPONENT = "customers"
"""The ledger component of a partner's noisy customer count (once per overlap run)."""


def overlap_component(counterpart: str) -> str:
    """The ledger component of an overlap count with ``counterpart``."""
    return f"count:{counterpart}"


def check_set_sizes(guard: PartnerGuard, *, run_id: str, own: int, counterpart: int) -> None:
    """Refuse when either set is below the partner's ``min_query_set_size``.

    Raises
    ------
    fedprofile.errors.PolicyRefusedError
        Naming which set is too small and the limit (never the sizes' members).
    """
    low = guard.policy.min_query_set_size
    for who, size in (("its own", own), ("the counterpart's", counterpart)):
        if size < low:
            raise guard._refused(run_id, f"{who} query set is below its policy's "
                                 f"min_query_set_size of {low} customers.")


def _queries_today(guard: PartnerGuard, tx: LedgerTransaction, component: str) -> int:
    start = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00")
    row = tx._db.execute(
        "SELECT COUNT(*) FROM releases WHERE party = ? AND stage = ? AND component = ? "
        "AND created_at >= ?", (guard.party, OVERLAP_STAGE, component, start)).fetchone()
    return int(row[0])


def authorize_overlap(guard: PartnerGuard, *, run_id: str, counterpart: str,
                      events: Sequence[PrivacyEvent]) -> None:
    """Authorise and durably record one overlap count's releases in one transaction.

    ``events[0]`` is this partner's share of the count; the others (its noisy size) are
    sent with it.

    Raises
    ------
    fedprofile.errors.PolicyRefusedError
        If the run was not announced with the ``overlap`` stage, the stage is not allowed,
        the daily query limit with ``counterpart`` is reached, or a budget would be exceeded.
        Nothing is recorded then, except a note.
    """
    try:
        with guard.ledger.exclusive() as tx:
            guard._plan_with(tx, run_id, OVERLAP_STAGE)
            guard._check_non_private(events)
            limit = guard.policy.max_overlap_queries_per_day
            if _queries_today(guard, tx, events[0].component) >= limit:
                raise PolicyRefusal(f"the overlap query limit with {counterpart!r} "
                                    f"({limit} per day, policy "
                                    "'max_overlap_queries_per_day') is reached.")
            guard._check_budget(tx, run_id, list(events))
            tx.record(run_id=run_id, party=guard.party, events=list(events),
                      delta=guard.policy.delta)
    except PolicyRefusal as exc:
        raise guard._refused(run_id, str(exc)) from None

