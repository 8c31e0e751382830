"""In-process driver: run the whole protocol for ``m`` partners, with chosen dropouts.

Used by the tests and the benchmarks; the Flower wiring carries the same messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedprofile.privacy.secagg.coordinator import SecaggCoordinator
from fedprofile.privacy.secagg.partner import SecaggPartner
from fedprofile.privacy.secagg.plan import SecaggPlan

__all__ = ["STEPS", "SimulationResult", "simulate_release", "simulate_run"]

STEPS = ("advertise", "agree_keys", "mask", "confirm", "unmask")
"""Steps at which a partner can vanish (it sends nothing from that step on)."""


@dataclass
class SimulationResult:
    """What happened: per-round sums and survivors, and every message the coordinator got."""

    totals: list[np.ndarray] = field(default_factory=list)
    survivors: list[tuple[str, ...]] = field(default_factory=list)
    received: list[object] = field(default_factory=list)


def simulate_run(rounds: Sequence[Mapping[str, np.ndarray]], *, threshold: int, bits: int,
                 min_survivors: int, dropouts: Mapping[str, tuple[int, str]] | None = None,
                 trusted: Mapping[str, Ed25519PublicKey] | None = None,
                 partners: Mapping[str, SecaggPartner] | None = None) -> SimulationResult:
    """Run key setup once, then one masked sum per element of ``rounds``.

    Parameters
    ----------
    rounds : Sequence[Mapping[str, numpy.ndarray]]
        Per round, partner id -> encoded ``uint64`` vector; the first round's ids are the roster.
    threshold, bits, min_survivors : int
        Protocol parameters (from a :class:`SecaggPlan`).
    dropouts : Mapping[str, tuple[int, str]], optional
        Partner id -> (round, step in :data:`STEPS`): it vanishes before answering that step
        (the round is ignored for the setup steps).
    trusted, partners : optional
        Override the trusted signing keys or the partner objects (tests of refusals).

    Raises
    ------
    ProtocolError
        If a partner refuses or too few remain; nothing is released for that round.
    """
    dropouts = dict(dropouts or {})
    roster = sorted(rounds[0])
    if partners is None:
        keys = {pid: Ed25519PrivateKey.generate() for pid in roster}
        trusted = trusted or {pid: k.public_key() for pid, k in keys.items()}
        partners = {pid: SecaggPartner(pid, keys[pid], trusted) for pid in roster}
    dim = len(next(iter(rounds[0].values())))
    coord = SecaggCoordinator(roster, threshold=threshold, bits=bits, dim=dim,
                              min_survivors=min_survivors)
    gone: set[str] = set()

    def alive(pid: str, round_: int, step: str) -> bool:
        when = dropouts.get(pid)
        if when is not None and step == when[1] and (step in STEPS[:2] or round_ == when[0]):
            gone.add(pid)
        return pid not in gone

    result = SimulationResult()
    adverts = [partners[p].advertise(coord.setup) for p in roster if alive(p, 0, "advertise")]
    result.received += adverts
    broadcast = coord.broadcast(adverts)
    agreed = [partners[a.partner_id].agree_keys(broadcast) for a in broadcast.adverts
              if alive(a.partner_id, 0, "agree_keys")]
    result.received += agreed
    coord.collect_agreements(agreed)
    for r, vectors in enumerate(rounds):
        requests = coord.mask_requests()
        masked = [partners[p].mask(req, vectors[p]) for p, req in requests.items()
                  if alive(p, r, "mask")]
        result.received += masked
        confirm = coord.collect_masked(masked)
        confirmations = [partners[p].confirm(req) for p, req in confirm.items()
                         if alive(p, r, "confirm")]
        result.received += confirmations
        unmask = coord.unmask_requests(confirmations)
        replies = [partners[p].unmask(req) for p, req in unmask.items() if alive(p, r, "unmask")]
        result.received += replies
        result.totals.append(coord.unmask(replies))
        result.survivors.append(tuple(sorted(m.partner_id for m in masked)))
    return result


def simulate_release(plan: SecaggPlan, values: Mapping[str, np.ndarray],
                     rng: np.random.Generator,
                     dropouts: Mapping[str, tuple[int, str]] | None = None
                     ) -> tuple[np.ndarray, SimulationResult]:
    """Encode real vectors with ``plan`` (quantise + Skellam share), securely sum, decode.

    Returns the decoded real sum of the survivors' noised vectors and the simulation record.
    """
    encoded = {pid: plan.encode(v, rng) for pid, v in values.items()}
    result = simulate_run([encoded], threshold=plan.threshold, bits=plan.quantization.bits,
                          min_survivors=plan.min_survivors, dropouts=dropouts)
    plan.check_survivors(len(result.survivors[0]))
    return plan.quantization.decode_sum(result.totals[0]), result
