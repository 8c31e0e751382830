"""Secure aggregation on the coordinator: key setup once per stage, then masked rounds.

The coordinator relays public keys and ciphertexts it cannot read, receives one masked
vector per partner and per round (uniform on the ring on its own), and unmasks only their
sum (:class:`fedprofile.privacy.secagg.coordinator.SecaggCoordinator`). Any failure of the
protocol stops the run before anything is released.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
from flwr.app import RecordDict

from fedprofile.config import RunConfig
from fedprofile.errors import ProtocolError
from fedprofile.privacy.accounting import planning_epsilon
from fedprofile.privacy.events import PrivacyEvent
from fedprofile.privacy.secagg.coordinator import SecaggCoordinator
from fedprofile.privacy.secagg.messages import (
    Confirmation,
    KeyAdvert,
    KeysAgreed,
    UnmaskReply,
    UnmaskRequest,
)
from fedprofile.privacy.secagg.plan import default_threshold, fewest_secure_partners
from fedprofile.protocol.secagg import (
    RING_BITS,
    SECAGG_AGREE,
    SECAGG_CONFIRM,
    SECAGG_KEYS,
    SECAGG_UNMASK,
    SecaggMasked,
    SecaggSetup,
    SecureSum,
    decode,
    encode,
    with_mask_request,
)
from fedprofile.server.federation import Federation, RunAborted, group_reasons

__all__ = ["SecureAggregation", "secagg_budget", "unmask_askees"]

log = logging.getLogger("fedprofile.server")


def secagg_budget(cfg: RunConfig) -> RunConfig:
    """Under secagg, plan with the GDP budget whose Renyi-DP conversion is the target.

    Skellam releases are accounted in RDP (each costs at most its Gaussian counterpart at
    every order), and RDP composition converts to a larger epsilon than GDP composition;
    the run therefore plans with ``mu = rdp_mu(epsilon, delta)`` (expressed as the GDP
    epsilon of that ``mu``) so that the RDP-exact epsilon of all its releases is the target.
    """
    if cfg.noise != "secagg":
        return cfg
    return replace(cfg, epsilon=planning_epsilon(cfg.epsilon, cfg.delta))


def _decoder(kind: type) -> Callable[[RecordDict], Any]:
    return partial(decode, kind)


@dataclass
class SecureAggregation:
    """The coordinator's secure aggregation for one stage of a run.

    Parameters
    ----------
    fed : Federation
        The run's partners (named by their ``query.profile`` replies).
    run_id, stage : str
        The fedprofile run and the stage (``kmeans``, ``ridge``, ``logistic``).
    dim : int
        Length of every masked vector of the stage.
    dropouts : int
        ``t``: partners that may drop out or collude with the coordinator.
    """

    fed: Federation
    run_id: str
    stage: str
    dim: int
    dropouts: int
    partners: int = 0
    survivors: list[int] = field(default_factory=list)
    coordinator: SecaggCoordinator | None = None

    def setup(self) -> None:
        """Key advertisement and agreement (two round trips, once per stage)."""
        fed, m, t = self.fed, len(self.fed.node_ids), self.dropouts
        k = default_threshold(m, t)
        if m < fewest_secure_partners(t):
            raise RunAborted(f"Secure aggregation needs at least {fewest_secure_partners(t)} "
                             f"partners for 'secagg_dropouts' = {t}; this run has {m}. Lower "
                             "'secagg_dropouts' or use noise = 'partner'.")
        self.partners = m
        coord = SecaggCoordinator([fed.name(n) for n in fed.node_ids], threshold=k,
                                  bits=RING_BITS, dim=self.dim, min_survivors=max(m - t, k))
        self.coordinator = coord
        setup = SecaggSetup(self.run_id, self.stage, m, t, coord.setup)
        adverts = fed.broadcast(SECAGG_KEYS, encode(setup), _decoder(KeyAdvert))
        own = [a for node, a in adverts.items() if a.partner_id == fed.name(node)]
        with _aborting(self.fed):
            relay = coord.broadcast(own)
        named = {a.partner_id for a in relay.adverts}
        agreed = fed.send(SECAGG_AGREE, {n: encode(relay) for n in fed.node_ids
                                         if fed.name(n) in named}, _decoder(KeysAgreed))
        with _aborting(self.fed):
            coord.collect_agreements([a for node, a in agreed.items()
                                      if a.partner_id == fed.name(node)])
        log.info("Secure aggregation set up for %s: %d partners, threshold %d, up to %d "
                 "dropouts", self.stage, m, k, t)

    def release(self, content: RecordDict, message_type: str, secure_sum: SecureSum, *,
                everyone: bool = False
                ) -> tuple[list[np.ndarray], dict[int, tuple[PrivacyEvent, ...]]]:
        """One masked round: the stage request with a mask request, then the unmask step.

        Returns the decoded sums (flat, one per statistic of ``secure_sum``) and each
        partner's ledger events (of partners whose masked vector is in the sum). The
        unmask step asks ``threshold`` survivors, or ``everyone`` (the stage's last round,
        after which each partner deletes its secrets of the stage).
        """
        if self.coordinator is None:
            self.setup()
        coord, fed = self.coordinator, self.fed
        assert coord is not None
        node_of = {fed.name(n): n for n in fed.node_ids}
        with _aborting(self.fed):
            requests = coord.mask_requests(secure_sum.dim)
        masked = fed.send(message_type, {node_of[p]: with_mask_request(content, r)
                                         for p, r in requests.items() if p in node_of},
                          _decoder(SecaggMasked))
        masked = {n: m for n, m in masked.items()  # the vectors the sum will hold
                  if m.masked.partner_id == fed.name(n) and m.masked.round == coord.round}
        with _aborting(self.fed):
            confirm = coord.collect_masked([m.masked for m in masked.values()])
        confirmations = fed.send(SECAGG_CONFIRM, {node_of[p]: encode(r) for p, r in
                                                  confirm.items() if p in node_of},
                                 _decoder(Confirmation), others_stay=True) if confirm else {}
        with _aborting(self.fed):
            unmask = coord.unmask_requests([c for n, c in confirmations.items()
                                            if c.partner_id == fed.name(n)])
        replies = self._unmask_replies(unmask, node_of, everyone=everyone)
        plans = secure_sum.plans(self.partners, self.dropouts)
        with _aborting(self.fed):
            total = coord.unmask(replies)
            plans[0].check_survivors(len(masked))
        self.survivors = sorted(masked)
        return secure_sum.decode(plans, total), {n: m.events for n, m in masked.items()}

    def _unmask_replies(self, requests: dict[str, UnmaskRequest], node_of: dict[str, int],
                        *, everyone: bool) -> list[UnmaskReply]:
        """Ask ``threshold`` survivors for their shares; the others only if one fails.

        Any ``threshold`` survivors' shares unmask the sum, so the others are spared the
        step (a partner reveals less, and a round costs fewer messages). Who is asked
        rotates with the round; a survivor not asked stays in the run. After a dropout every
        survivor is asked (each holds its own pairwise key with the dropped partner).
        """
        coord, fed = self.coordinator, self.fed
        assert coord is not None
        # a dropped partner's pairwise masks come off with every survivor's round key
        dropped = any(r.dropped for r in requests.values())
        asked = (sorted(requests) if everyone or dropped else
                 unmask_askees(sorted(requests), coord.setup.threshold, coord.round))
        replies: list[UnmaskReply] = []
        for group in (asked, [p for p in sorted(requests) if p not in asked]):
            if not group:
                break
            got = fed.send(SECAGG_UNMASK, {node_of[p]: encode(requests[p]) for p in group
                                           if p in node_of}, _decoder(UnmaskReply),
                           others_stay=True)
            replies += [r for n, r in got.items() if r.partner_id == fed.name(n)]
            if len(replies) >= coord.setup.threshold:
                break
            log.warning("%d of the survivors asked to unmask answered; %d are needed. Asking "
                        "the other survivors.", len(replies), coord.setup.threshold)
        return replies


def unmask_askees(survivors: list[str], threshold: int, round: int) -> list[str]:
    """The ``threshold`` survivors asked first in ``round``, rotating round by round."""
    if len(survivors) <= threshold:
        return list(survivors)
    start = (round * threshold) % len(survivors)
    return [survivors[(start + i) % len(survivors)] for i in range(threshold)]


class _aborting:
    """Turn a secure-aggregation failure into :class:`RunAborted` (nothing is released).

    The message names the partners that left and why (a policy refusal names its limit).
    """

    def __init__(self, fed: Federation) -> None:
        self.fed = fed

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, ProtocolError):
            left = self.fed.dropped
            why = f" Partners that left: {group_reasons(left)}." if left else ""
            raise RunAborted(f"{exc}{why}") from None
