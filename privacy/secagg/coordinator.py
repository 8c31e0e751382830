"""The coordinator side of secure aggregation: relays, then unmasks only the sum.

The coordinator sees public keys, ciphertexts it cannot read, masked vectors (uniform on the
ring one by one), and, per round, at least ``threshold`` shares of each survivor's fresh
self-mask seed and, from every survivor, that round's pairwise key with each dropped
partner: exactly what is needed to remove the masks from the *sum* of the survivors'
vectors. A round with a dropped partner therefore needs every survivor's answer, and first
every survivor's signature of the same list of survivors and dropped partners (relayed to
each, which checks them before it reveals anything).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np

from fedprofile.errors import ProtocolError
from fedprofile.privacy.secagg import crypto, shamir
from fedprofile.privacy.secagg.messages import (
    Confirmation,
    ConfirmRequest,
    KeyAdvert,
    KeyBroadcast,
    KeysAgreed,
    MaskedInput,
    MaskRequest,
    SetupRequest,
    UnmaskReply,
    UnmaskRequest,
)

__all__ = ["SecaggCoordinator"]


class SecaggCoordinator:
    """Coordinator state for one secure-aggregation run.

    Parameters
    ----------
    roster : Sequence[str]
        Invited partner ids.
    threshold, bits, dim, min_survivors : int
        From the plan (:class:`fedprofile.privacy.secagg.plan.SecaggPlan`).
    run_id : bytes, optional
        16 random bytes by default; must never repeat.
    """

    def __init__(self, roster: Sequence[str], *, threshold: int, bits: int, dim: int,
                 min_survivors: int, run_id: bytes | None = None) -> None:
        self.setup = SetupRequest(os.urandom(16) if run_id is None else run_id,
                                  tuple(sorted(set(roster))), threshold, bits, dim,
                                  min_survivors)
        self.adverts: dict[str, KeyAdvert] = {}
        self.active: list[str] = []
        self.excluded: set[str] = set()
        self.round = -1
        self._masked: dict[str, MaskedInput] = {}
        self._participants: tuple[str, ...] = ()
        self._dim = dim

    def _need(self, count: int, what: str) -> None:
        if count < self.setup.min_survivors:
            raise ProtocolError(
                f"Secure aggregation aborted: only {count} partners {what}; at least "
                f"{self.setup.min_survivors} are needed (threshold {self.setup.threshold}); "
                f"nothing is released.")

    def broadcast(self, adverts: Iterable[KeyAdvert]) -> KeyBroadcast:
        """Collect the adverts that arrived and relay them, sorted, to every advertiser."""
        got = {a.partner_id: a for a in adverts if a.partner_id in self.setup.roster}
        self._need(len(got), "sent their public keys")
        self.adverts = dict(sorted(got.items()))
        return KeyBroadcast(self.setup.run_id, tuple(self.adverts.values()))

    def collect_agreements(self, messages: Iterable[KeysAgreed]) -> None:
        """The partners that agreed their keys are the run's participants."""
        agreed = {m.partner_id for m in messages if m.partner_id in self.adverts}
        self._need(len(agreed), "agreed their keys")
        self.active = sorted(agreed)

    def mask_requests(self, dim: int | None = None) -> dict[str, MaskRequest]:
        """Start the next round, of vectors of ``dim`` values (the run's length by default)."""
        dim = self.setup.dim if dim is None else dim
        if not 1 <= dim <= self.setup.dim:
            raise ProtocolError(f"Secure aggregation aborted: a round of {dim} values does not "
                                f"fit the run's vectors of {self.setup.dim}.")
        self._need(len(self.active), "remain in the run")
        self._dim = dim
        self.round += 1
        self._participants = tuple(self.active)
        self._masked = {}
        return {pid: MaskRequest(self.setup.run_id, self.round, self._participants, dim)
                for pid in self._participants}

    def collect_masked(self, messages: Iterable[MaskedInput]) -> dict[str, ConfirmRequest]:
        """Keep the round's masked vectors; if a partner dropped, the list survivors must sign.

        Returns a :class:`ConfirmRequest` per survivor when a participant dropped (each
        survivor signs the same list before anyone reveals), else nothing.
        """
        self._masked = {m.partner_id: m for m in messages
                        if m.partner_id in self._participants and m.round == self.round}
        for pid, m in self._masked.items():
            vec = m.masked
            if not isinstance(vec, np.ndarray) or vec.dtype != np.uint64 \
                    or vec.shape != (self._dim,) or np.any(vec >> np.uint64(self.setup.bits)):
                raise ProtocolError(f"Secure aggregation aborted: partner {pid!r} sent a masked "
                                    f"vector that is not {self._dim} uint64 residues mod "
                                    f"2**{self.setup.bits}.")
        survivors = tuple(sorted(self._masked))
        dropped = self._dropped()
        self._need(len(survivors), "sent masked vectors")
        if not dropped:
            return {}
        return {pid: ConfirmRequest(self.setup.run_id, self.round, survivors, dropped)
                for pid in survivors}

    def _dropped(self) -> tuple[str, ...]:
        return tuple(p for p in self._participants if p not in self._masked)

    def unmask_requests(self, confirmations: Iterable[Confirmation] = ()
                        ) -> dict[str, UnmaskRequest]:
        """Ask every survivor for the shares that unmask their sum.

        After a dropout every survivor's :class:`Confirmation` must be given (the partners
        check the signatures); a survivor that did not confirm stops the round.
        """
        survivors, dropped = tuple(sorted(self._masked)), self._dropped()
        signatures: dict[str, bytes] = {}
        if dropped:
            signatures = {c.partner_id: c.signature for c in confirmations
                          if c.partner_id in self._masked and c.round == self.round}
            silent = sorted(set(survivors) - set(signatures))
            if silent:
                raise ProtocolError(
                    f"Secure aggregation aborted: {', '.join(map(repr, dropped))} dropped and "
                    f"{', '.join(map(repr, silent))} did not confirm the survivors; every "
                    "survivor must, before any unmasks; nothing is released.")
        return {pid: UnmaskRequest(self.setup.run_id, self.round, survivors, dropped, {
            owner: m.seed_shares[pid] for owner, m in self._masked.items()
            if pid in m.seed_shares}, signatures) for pid in survivors}

    def unmask(self, replies: Iterable[UnmaskReply]) -> np.ndarray:
        """Reconstruct the masks and return the survivors' sum mod ``2**bits`` (``uint64``)."""
        setup, index = self.setup, {pid: i + 1 for i, pid in enumerate(self.adverts)}
        replies = list({r.partner_id: r for r in replies  # one reply per survivor
                        if r.partner_id in self._masked and r.round == self.round}.values())
        if len(replies) < setup.threshold:
            raise ProtocolError(
                f"Secure aggregation aborted: {len(replies)} partners answered the unmask "
                f"step; the threshold is {setup.threshold}; nothing is released.")
        dropped = self._dropped()
        if dropped and {r.partner_id for r in replies} != set(self._masked):
            silent = sorted(set(self._masked) - {r.partner_id for r in replies})
            raise ProtocolError(
                f"Secure aggregation aborted: {', '.join(map(repr, dropped))} dropped, so every "
                f"survivor must give its pairwise key with them; {', '.join(map(repr, silent))} "
                "did not answer the unmask step; nothing is released.")
        total = np.zeros(self._dim, dtype=np.uint64)
        for masked in self._masked.values():
            total += masked.masked
        for owner, masked in self._masked.items():
            shares = {index[r.partner_id]: r.seed_shares[owner] for r in replies
                      if owner in r.seed_shares}
            seed = shamir.combine(shares, setup.threshold, crypto.SEED_BYTES)
            if crypto.seed_commitment(seed, run_id=setup.run_id, partner_id=owner,
                                      round=self.round) != masked.seed_commitment:
                raise ProtocolError(f"Secure aggregation aborted: the self-mask of partner "
                                    f"{owner!r} did not reconstruct (a wrong share was sent).")
            total -= crypto.mask_vector(seed, run_id=setup.run_id, label=b"self",
                                        round=self.round, dim=self._dim, bits=setup.bits)
        for gone in dropped:
            for reply in replies:  # every survivor's, checked above
                key = reply.pair_keys.get(gone)
                if not isinstance(key, bytes) or len(key) != crypto.KEY_BYTES:
                    raise ProtocolError(f"Secure aggregation aborted: partner "
                                        f"{reply.partner_id!r} gave no round key with dropped "
                                        f"partner {gone!r}; nothing is released.")
                pair = crypto.expand_mask(key, dim=self._dim, bits=setup.bits)
                total = total - pair if reply.partner_id < gone else total + pair
            self.excluded.add(gone)
        self.active = [p for p in self.active if p not in self.excluded]
        return total & np.uint64((1 << setup.bits) - 1)
