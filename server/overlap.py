"""The coordinator's overlap run: PSI cardinality for pairs of partners, relayed blind.

For every pair the coordinator relays three messages (see
:mod:`fedprofile.protocol.overlap`); it sees only blinded curve points, padded set sizes,
each partner's noisy customer count and the noisy, possibly suppressed, overlap count.
Each partner's share of each release is entered in the federation ledger. A refusal by a
partner ends that pair only; the cell says why.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedprofile.config import RunConfig
from fedprofile.contract.parser import load_spec
from fedprofile.privacy.events import PrivacyEvent
from fedprofile.privacy.psi import overlap_sigma
from fedprofile.protocol import MessageKind
from fedprofile.protocol.overlap import (
    OverlapBlindReply,
    OverlapCountReply,
    OverlapQuery,
    OverlapRespondReply,
    OverlapStep,
)
from fedprofile.server.federation import Federation, RunAborted
from fedprofile.server.session import RunSession, open_run

__all__ = ["OVERLAP_FORMAT", "OverlapPlan", "parse_pairs", "run_overlap"]

log = logging.getLogger("fedprofile.server")
OVERLAP_FORMAT = "fedprofile-overlap/1"
T = TypeVar("T")


@dataclass(frozen=True)
class OverlapPlan:
    """The noise of each overlap count: sensitivity 1, ``sigma = 1/mu(epsilon, delta)``."""

    epsilon: float
    delta: float

    @property
    def sigma(self) -> float:
        """Standard deviation of each count's discrete Gaussian noise (0: non-private)."""
        return overlap_sigma(self.epsilon, self.delta)

    @property
    def mu(self) -> float:
        """GDP parameter of one count."""
        return math.inf if self.sigma == 0 else 1.0 / self.sigma

    @property
    def non_private(self) -> bool:
        """Whether counts are released without noise."""
        return self.sigma == 0

    def events(self) -> tuple[PrivacyEvent, ...]:
        """Nothing is planned up front: each partner authorises each count as a query."""
        return ()


class PairRefused(Exception):
    """One step of one pair failed; the message says who and why (no data values)."""


def parse_pairs(text: str, partners: list[str]) -> list[tuple[str, str]]:
    """The pairs ``"A:B,A:C"`` names (every pair when empty), checked against the run.

    Raises
    ------
    RunAborted
        If a pair is malformed, repeats a partner, or names a partner not in the run.
    """
    if not text.strip():
        return [(a, b) for i, a in enumerate(partners) for b in partners[i + 1:]]
    pairs = []
    for item in text.split(","):
        names = [x.strip() for x in item.split(":")]
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise RunAborted(f"Overlap pair {item.strip()!r} must be two different partner "
                             "names, 'A:B'.")
        missing = [n for n in names if n not in partners]
        if missing:
            raise RunAborted(f"Overlap requested for partner(s) {missing} not in the run; "
                             f"partners: {partners}. Nothing was released.")
        pairs.append((names[0], names[1]))
    return pairs


def _ask(fed: Federation, node: int, kind: str, content: RecordDict,
         decode: Callable[[RecordDict], T]) -> T:
    """Send one message to one partner and decode its reply; PairRefused on any failure."""
    ids = list(fed.grid.push_messages([Message(content=content, message_type=kind,
                                               dst_node_id=node)]))
    replies = fed._collect(set(ids))
    if not replies:
        raise PairRefused(f"{fed.name(node)} did not answer {kind} within {fed.timeout:g} s")
    reply = replies[0]
    if reply.has_error():
        raise PairRefused(f"{fed.name(node)}: {reply.error.reason}")
    return decode(reply.content)


def _pair(session: RunSession, plan: OverlapPlan, fingerprint: str, a: int, b: int,
          customers: dict[str, int]) -> dict[str, Any]:
    fed, start = session.fed, time.perf_counter()
    qid = uuid.uuid4().hex
    query_a = OverlapQuery(run_id=session.run_id, spec_fingerprint=fingerprint, query_id=qid,
                           counterpart=fed.name(b), noise_multiplier=plan.sigma)
    query_b = OverlapQuery(run_id=session.run_id, spec_fingerprint=fingerprint, query_id=qid,
                           counterpart=fed.name(a), noise_multiplier=plan.sigma)
    first = _ask(fed, a, MessageKind.OVERLAP_BLIND,
                 OverlapStep(MessageKind.OVERLAP_BLIND, query_a).to_record(),
                 OverlapBlindReply.from_record)
    second = _ask(fed, b, MessageKind.OVERLAP_RESPOND,
                  OverlapStep(MessageKind.OVERLAP_RESPOND, query_b,
                              blinded=first.blinded).to_record(),
                  OverlapRespondReply.from_record)
    session.ledger.record(run_id=session.run_id, party=fed.name(b), events=second.events,
                          delta=session.delta)
    customers[fed.name(b)] = second.noisy_customers
    third = _ask(fed, a, MessageKind.OVERLAP_COUNT,
                 OverlapStep(MessageKind.OVERLAP_COUNT, query_a, blinded=second.double,
                             counterpart_points=second.own,
                             min_overlap_size=second.min_overlap_size).to_record(),
                 OverlapCountReply.from_record)
    session.ledger.record(run_id=session.run_id, party=fed.name(a), events=third.events,
                          delta=session.delta)
    customers[fed.name(a)] = third.noisy_customers
    wire = first.blinded.nbytes + second.double.nbytes + second.own.nbytes
    return {"count": None if third.suppressed else third.count,
            "suppressed": third.suppressed,
            "min_overlap_size": third.floor,
            "padded_set_sizes": [len(first.blinded), len(second.own)],
            "seconds": round(time.perf_counter() - start, 3), "point_bytes": wire}


def run_overlap(grid: Grid, cfg: RunConfig, *, expected_partners: int = 0
                ) -> dict[str, Any]:
    """Count the overlap of every requested pair; return the overlap model document."""
    spec = load_spec(cfg.spec)
    plan = OverlapPlan(epsilon=cfg.epsilon, delta=cfg.delta)
    session = open_run(grid, cfg, spec, plan, stages=("overlap",),
                       expected_partners=expected_partners)
    fed = session.fed
    by_name = {fed.name(n): n for n in fed.node_ids}
    try:
        pairs = parse_pairs(cfg.pairs, list(by_name))
        cells: list[dict[str, Any]] = []
        customers: dict[str, int] = {}
        for number, (a, b) in enumerate(pairs, start=1):
            try:
                cell = _pair(session, plan, spec.fingerprint(), by_name[a], by_name[b],
                             customers)
            except PairRefused as exc:
                log.warning("Overlap %s-%s refused: %s", a, b, exc)
                cell = {"count": None, "suppressed": False, "refused": str(exc)}
            cells.append({"partners": [a, b], **cell})
            log.info("overlap round %d of %d: %s-%s done", number, len(pairs), a, b)
        spent = {name: session.ledger.spend(party=name, delta=cfg.delta,
                                            run_id=session.run_id).to_dict()
                 for name in by_name}
    finally:
        session.ledger.close()
    eps = {name: _epsilon(s) for name, s in spent.items()}
    return {"format": OVERLAP_FORMAT, "task": "overlap", "run_id": session.run_id,
            "partners": list(by_name), "pairs": cells, "noisy_customers": customers,
            "privacy": {"epsilon_per_count": None if plan.non_private else cfg.epsilon,
                        "delta": cfg.delta, "sigma": plan.sigma,
                        "mechanism": "discrete gaussian" if not plan.non_private else "none",
                        "sensitivity": 1, "unit": "one customer of one partner (add/remove)",
                        "non_private": plan.non_private, "epsilon_per_partner": eps,
                        "noise_placement": "the pair's initiating partner",
                        "accountant": "gdp-exact (each count charged to both partners)"},
            "protocol": {"name": "DH-PSI cardinality on X25519 (fresh keys per query)",
                         "relay_sees": "blinded points, set sizes padded to within 25 %, "
                                       "noisy customer counts, the noisy overlap count"}}


def _epsilon(spend: dict[str, Any]) -> float | None:
    eps = spend.get("epsilon")
    return None if eps is None or (isinstance(eps, float) and math.isinf(eps)) else eps

