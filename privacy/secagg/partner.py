"""The partner side of secure aggregation: a small state machine, one method per message.

Per run a partner makes two X25519 key pairs (masks, share encryption) and signs their public
keys with its long-term Ed25519 key. Per round it adds to its vector a fresh self-mask (from a
32-byte seed it Shamir-shares with the other participants) and one pairwise mask per other
participant (from the full 32-byte X25519 secret, HKDF with the run id and the round, ChaCha20).

For a participant that dropped it reveals only that round's pairwise key with it (HKDF of
the agreed secret and the round), never a share of a long-term key: a partner that survived
one round and is declared dropped in a later one keeps its earlier vectors masked. After a
dropout it signs the round's list of survivors and dropped partners (one list per round) and
reveals only for a list every survivor on it signed, so partners shown different lists
reveal nothing that combines.

What it refuses, each with :class:`ProtocolError`: unsigned or swapped keys, a roster without
it, fewer participants or survivors than the plan's minimum, a round number that does not
increase, survivor/dropped lists that do not match the round's participants, a second list
for a round, a list with a dropped partner that a survivor did not sign, and a second
unmask of a round.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

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

__all__ = ["SecaggPartner", "aad"]


def aad(kind: str, run_id: bytes, round: int, sender: str, recipient: str) -> bytes:
    """Associated data binding a relayed share to its kind, run, round, sender and recipient."""
    return "|".join([kind, run_id.hex(), str(round), sender, recipient]).encode()


def _refuse(detail: str) -> ProtocolError:
    return ProtocolError(f"Secure aggregation refused: {detail}")


class SecaggPartner:
    """One partner's secure-aggregation state for one run.

    Parameters
    ----------
    partner_id : str
        This partner's id (as in the roster).
    signing_key : Ed25519PrivateKey
        Long-term key whose public half the other partners trust.
    trusted : Mapping[str, Ed25519PublicKey]
        Partner id -> trusted public signing key (from the federation's key files).
    min_survivors : int, default=2
        This partner's own floor on the vectors in any sum it joins (its policy's
        ``min_secure_aggregation_partners`` and the locally computed plan's ``m - t``); a
        run asking for less is refused.
    """

    def __init__(self, partner_id: str, signing_key: Ed25519PrivateKey,
                 trusted: Mapping[str, Ed25519PublicKey], *, min_survivors: int = 2) -> None:
        self.partner_id = partner_id
        self.min_survivors = min_survivors
        self._signing_key = signing_key
        self._trusted = dict(trusted)
        self._setup: SetupRequest | None = None
        self._mask_sk = X25519PrivateKey.generate()
        self._enc_sk = X25519PrivateKey.generate()
        self._roster: tuple[str, ...] = ()
        self._pair_secret: dict[str, bytes] = {}
        self._enc_key: dict[str, bytes] = {}
        self._last_round = -1
        self._round_participants: tuple[str, ...] = ()
        self._own_seed_share = b""
        self._unmasked = True
        self._confirmed: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def advertise(self, request: SetupRequest) -> KeyAdvert:
        """Answer :class:`SetupRequest` with this run's signed public keys."""
        if self._setup is not None:
            raise _refuse("this partner already joined the run; a new run needs new keys.")
        if self.partner_id not in request.roster:
            raise _refuse(f"partner {self.partner_id!r} is not in the run's roster.")
        if not (2 <= request.threshold <= len(request.roster) and 2 <= request.bits <= 62
                and request.dim >= 1 and request.min_survivors >= request.threshold):
            raise _refuse("the run's threshold, bits, dimension or minimum survivors are "
                          "invalid.")
        if 2 * request.threshold <= len(request.roster):
            raise _refuse(f"the threshold {request.threshold} is not a majority of the "
                          f"{len(request.roster)} invited partners.")
        if request.min_survivors < self.min_survivors:
            raise _refuse(f"the run accepts sums of {request.min_survivors} partners; partner "
                          f"{self.partner_id!r} requires at least {self.min_survivors}.")
        self._setup = request
        mask_key, enc_key = crypto.public_bytes(self._mask_sk), crypto.public_bytes(self._enc_sk)
        payload = crypto.advert_payload(request.run_id, self.partner_id, mask_key, enc_key)
        return KeyAdvert(self.partner_id, mask_key, enc_key, self._signing_key.sign(payload))

    def agree_keys(self, broadcast: KeyBroadcast) -> KeysAgreed:
        """Check every relayed advert's signature and agree the pairwise keys."""
        setup = self._require_setup(broadcast.run_id)
        ids = tuple(a.partner_id for a in broadcast.adverts)
        if list(ids) != sorted(set(ids)) or not set(ids) <= set(setup.roster):
            raise _refuse("the relayed adverts must be sorted, unique and from the roster.")
        if len(ids) < setup.min_survivors:
            raise _refuse(f"only {len(ids)} partners shared keys; the plan needs "
                          f"{setup.min_survivors}.")
        mine = crypto.public_bytes(self._mask_sk), crypto.public_bytes(self._enc_sk)
        for advert in broadcast.adverts:
            payload = crypto.advert_payload(setup.run_id, advert.partner_id, advert.mask_key,
                                            advert.enc_key)
            crypto.verify_advert(self._trusted.get(advert.partner_id), advert.signature,
                                 payload, advert.partner_id)
            if advert.partner_id == self.partner_id:
                if (advert.mask_key, advert.enc_key) != mine:
                    raise _refuse("the coordinator relayed other keys under this partner's id.")
                continue
            self._pair_secret[advert.partner_id] = crypto.agree(self._mask_sk, advert.mask_key)
            self._enc_key[advert.partner_id] = crypto.derive_key(
                crypto.agree(self._enc_sk, advert.enc_key), run_id=setup.run_id,
                info=b"share-encryption")
        if self.partner_id not in ids:
            raise _refuse("this partner's own advert is missing from the broadcast.")
        self._roster = ids
        return KeysAgreed(self.partner_id)

    def check_round(self, request: MaskRequest) -> SetupRequest:
        """Refuse a mask request this partner would not mask for; change nothing.

        Made before the release is authorised and recorded, so that a stale or malformed
        request does not use up one of the run's planned releases.
        """
        setup = self._require_setup(request.run_id)
        if not self._roster:
            raise _refuse("keys were not shared yet.")
        if request.round <= self._last_round:
            raise _refuse(f"round {request.round} is not after round {self._last_round}.")
        parts = request.participants
        if len(set(parts)) != len(parts) or not set(parts) <= set(self._roster) \
                or self.partner_id not in parts:
            raise _refuse("the participants must be unique roster members including this "
                          "partner.")
        if len(parts) < setup.min_survivors:
            raise _refuse(f"{len(parts)} participants; the plan needs {setup.min_survivors}.")
        if not 1 <= request.dim <= setup.dim:
            raise _refuse(f"a round of {request.dim} values does not fit the run's vectors of "
                          f"{setup.dim}.")
        return setup

    def mask(self, request: MaskRequest, vector: np.ndarray) -> MaskedInput:
        """Mask this round's encoded vector (``uint64`` residues mod ``2**bits``)."""
        setup, parts, dim = self.check_round(request), request.participants, request.dim
        vec = np.asarray(vector)
        if vec.dtype != np.uint64 or vec.shape != (dim,) or np.any(vec >> np.uint64(setup.bits)):
            raise _refuse(f"the vector must be {dim} uint64 residues mod 2**{setup.bits}.")
        seed = os.urandom(crypto.SEED_BYTES)
        total = vec + crypto.mask_vector(seed, run_id=setup.run_id, label=b"self",
                                         round=request.round, dim=dim, bits=setup.bits)
        for pid in parts:
            if pid == self.partner_id:
                continue
            pair = crypto.mask_vector(self._pair_secret[pid], run_id=setup.run_id,
                                      label=b"pair", round=request.round, dim=dim,
                                      bits=setup.bits)
            total = total + pair if self.partner_id < pid else total - pair
        shares = shamir.split(seed, setup.threshold, len(self._roster))
        out = {}
        for pid, share in zip(self._roster, shares, strict=True):
            if pid == self.partner_id:
                self._own_seed_share = share
            elif pid in parts:
                out[pid] = crypto.encrypt(self._enc_key[pid], share, aad(
                    "seed", setup.run_id, request.round, self.partner_id, pid))
        self._last_round, self._round_participants, self._unmasked = request.round, parts, False
        self._confirmed = None
        commitment = crypto.seed_commitment(seed, run_id=setup.run_id,
                                            partner_id=self.partner_id, round=request.round)
        return MaskedInput(self.partner_id, request.round, total & np.uint64((1 << setup.bits)
                                                                              - 1),
                           out, commitment)

    def unmask(self, request: UnmaskRequest) -> UnmaskReply:
        """Reveal survivors' seed shares and this round's pairwise keys with the dropped.

        Never both for one partner: a dropped partner's self-mask stays secret, and its
        masks of other rounds stay secret too (only this round's pairwise keys are given).
        """
        setup, view = self._check_view(request.run_id, request.round, request.survivors,
                                       request.dropped)
        if request.dropped:
            if self._confirmed is None:
                raise _refuse("a round with a dropped partner is unmasked only after every "
                              "survivor confirmed the same list.")
            payload = crypto.survivors_payload(setup.run_id, request.round, *view)
            for pid in view[0]:
                if pid == self.partner_id:  # its own confirmation is the view it keeps
                    continue
                if not crypto.signed_by(self._trusted.get(pid),
                                        request.signatures.get(pid, b""), payload):
                    raise _refuse(f"survivor {pid!r} did not sign this round's list of "
                                  "survivors (the coordinator may show partners different "
                                  "lists).")
        self._confirmed = view
        seeds = {self.partner_id: self._own_seed_share}
        for owner in request.survivors:
            if owner != self.partner_id and owner in request.seed_shares:
                seeds[owner] = crypto.decrypt(self._enc_key[owner], request.seed_shares[owner],
                                              aad("seed", setup.run_id, request.round, owner,
                                                  self.partner_id))
        keys = {v: crypto.round_key(self._pair_secret[v], run_id=setup.run_id, label=b"pair",
                                    round=request.round) for v in request.dropped}
        self._unmasked = True
        return UnmaskReply(self.partner_id, request.round, seeds, keys)

    def confirm(self, request: ConfirmRequest) -> Confirmation:
        """Sign the round's survivors and dropped partners: one list per round, for good."""
        setup, view = self._check_view(request.run_id, request.round, request.survivors,
                                       request.dropped)
        self._confirmed = view
        payload = crypto.survivors_payload(setup.run_id, request.round, *view)
        return Confirmation(self.partner_id, request.round, self._signing_key.sign(payload))

    def _check_view(self, run_id: bytes, round: int, survivors: tuple[str, ...],
                    dropped: tuple[str, ...]
                    ) -> tuple[SetupRequest, tuple[tuple[str, ...], tuple[str, ...]]]:
        """The setup and the sorted view of the awaiting round's survivors and dropped.

        Refused unless they split the round's participants and this partner confirmed no
        other list for the round.
        """
        setup = self._require_setup(run_id)
        if round != self._last_round or self._unmasked:
            raise _refuse(f"no masked round {round} awaits unmasking.")
        surv = set(survivors)
        if surv & set(dropped) or surv | set(dropped) != set(self._round_participants) \
                or len(surv) != len(survivors) or len(set(dropped)) != len(dropped) \
                or self.partner_id not in surv:
            raise _refuse("survivors and dropped partners must split this round's "
                          "participants.")
        if len(surv) < setup.min_survivors:
            raise _refuse(f"{len(surv)} survivors; the plan needs {setup.min_survivors}.")
        view = (tuple(sorted(survivors)), tuple(sorted(dropped)))
        if self._confirmed is not None and self._confirmed != view:
            raise _refuse(f"this partner confirmed another list of survivors for round {round}.")
        return setup, view

    def export_state(self) -> dict[str, Any]:
        """Return the protocol state (private keys included) for the node's own storage.

        Flower starts a new ClientApp process per message: keep this in the node's run context
        (never in a reply) and rebuild the partner with :meth:`restore`.
        """
        raw = Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        setup = self._setup
        return {
            "setup": None if setup is None else [setup.run_id, list(setup.roster),
                                                 setup.threshold, setup.bits, setup.dim,
                                                 setup.min_survivors],
            "mask_sk": self._mask_sk.private_bytes(*raw),
            "enc_sk": self._enc_sk.private_bytes(*raw),
            "roster": list(self._roster), "pair_secret": dict(self._pair_secret),
            "enc_key": dict(self._enc_key), "last_round": self._last_round,
            "round_participants": list(self._round_participants),
            "own_seed_share": self._own_seed_share, "unmasked": self._unmasked,
            "confirmed": None if self._confirmed is None else [list(x) for x in self._confirmed],
            "min_survivors": self.min_survivors,
        }

    @classmethod
    def restore(cls, partner_id: str, signing_key: Ed25519PrivateKey,
                trusted: Mapping[str, Ed25519PublicKey], state: Mapping[str, Any]
                ) -> SecaggPartner:
        """Rebuild a partner from :meth:`export_state` output."""
        self = cls(partner_id, signing_key, trusted, min_survivors=int(state["min_survivors"]))
        setup = state["setup"]
        self._setup = None if setup is None else SetupRequest(
            bytes(setup[0]), tuple(setup[1]), *(int(x) for x in setup[2:]))
        self._mask_sk = X25519PrivateKey.from_private_bytes(state["mask_sk"])
        self._enc_sk = X25519PrivateKey.from_private_bytes(state["enc_sk"])
        self._roster = tuple(state["roster"])
        self._pair_secret = dict(state["pair_secret"])
        self._enc_key = dict(state["enc_key"])
        self._last_round = int(state["last_round"])
        self._round_participants = tuple(state["round_participants"])
        self._own_seed_share = bytes(state["own_seed_share"])
        self._unmasked = bool(state["unmasked"])
        confirmed = state.get("confirmed")
        self._confirmed = None if confirmed is None else (tuple(confirmed[0]),
                                                          tuple(confirmed[1]))
        return self

    def _require_setup(self, run_id: bytes) -> SetupRequest:
        if self._setup is None or run_id != self._setup.run_id:
            raise _refuse("the message belongs to no run this partner joined.")
        return self._setup
