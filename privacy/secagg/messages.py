"""The messages of fedprofile's secure aggregation, one dataclass per hop.

Setup, once per run (two round trips)::

    coordinator -> every partner   SetupRequest
    partner     -> coordinator     KeyAdvert        (signed public keys)
    coordinator -> every partner   KeyBroadcast     (all adverts received)
    partner     -> coordinator     KeysAgreed       (adverts checked, pairwise keys agreed)

Each round (two round trips, three after a dropout; the first carries the partner's work)::

    coordinator -> partner         MaskRequest      (round, participants, length)
    partner     -> coordinator     MaskedInput      (masked vector, encrypted self-seed shares)
    coordinator -> survivor        ConfirmRequest   (only if a partner dropped: the list)
    survivor    -> coordinator     Confirmation     (its signature of that list)
    coordinator -> partner         UnmaskRequest    (survivors, dropped, relayed seed shares)
    partner     -> coordinator     UnmaskReply      (seed shares, round keys with the dropped)

Dict values that are ``bytes`` are ciphertexts (AES-GCM, readable only by the partner they are
addressed to) except in :class:`UnmaskReply`, whose values are meant for the coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ConfirmRequest",
    "Confirmation",
    "KeyAdvert",
    "KeyBroadcast",
    "KeysAgreed",
    "MaskRequest",
    "MaskedInput",
    "SetupRequest",
    "UnmaskReply",
    "UnmaskRequest",
]


@dataclass(frozen=True, slots=True)
class SetupRequest:
    """Coordinator -> partner: open a secure-aggregation run.

    ``roster`` lists every invited partner id; ``min_survivors`` is the plan's
    ``max(m - t, threshold)``: no partner takes part in a sum of fewer vectors.
    """

    run_id: bytes
    roster: tuple[str, ...]
    threshold: int
    bits: int
    dim: int
    min_survivors: int


@dataclass(frozen=True, slots=True)
class KeyAdvert:
    """Partner -> coordinator: two fresh X25519 public keys, signed with its Ed25519 key."""

    partner_id: str
    mask_key: bytes
    enc_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class KeyBroadcast:
    """Coordinator -> partner: the adverts of every partner that answered, relayed unchanged."""

    run_id: bytes
    adverts: tuple[KeyAdvert, ...]


@dataclass(frozen=True, slots=True)
class KeysAgreed:
    """Partner -> coordinator: it checked every relayed advert and agreed its pairwise keys.

    The senders are the run's participants. No share of a long-term key is ever sent: a
    dropped partner's masks are removed with per-round keys (:class:`UnmaskReply`).
    """

    partner_id: str


@dataclass(frozen=True, slots=True)
class MaskRequest:
    """Coordinator -> partner: mask round ``round`` with ``participants``.

    ``dim`` is the round's vector length, at most the run's :attr:`SetupRequest.dim` (a Lloyd
    round sends ``k`` centres where the start sent many candidates).
    """

    run_id: bytes
    round: int
    participants: tuple[str, ...]
    dim: int


@dataclass(frozen=True, slots=True)
class MaskedInput:
    """Partner -> coordinator: the masked vector and its fresh self-mask seed's shares."""

    partner_id: str
    round: int
    masked: np.ndarray
    seed_shares: dict[str, bytes]
    seed_commitment: bytes


@dataclass(frozen=True, slots=True)
class ConfirmRequest:
    """Coordinator -> survivor, only in a round where a partner dropped: the list to sign."""

    run_id: bytes
    round: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Confirmation:
    """Survivor -> coordinator: its signature of the round's survivors and dropped partners.

    A partner signs one list per round and reveals only for that list, so two honest
    partners never unmask a round under different views of who dropped.
    """

    partner_id: str
    round: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class UnmaskRequest:
    """Coordinator -> partner: who survived, who dropped, and the seed shares addressed to it.

    ``signatures`` holds every survivor's :class:`Confirmation` of the same list when a
    partner dropped (survivor id -> signature); it is empty otherwise.
    """

    run_id: bytes
    round: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    seed_shares: dict[str, bytes]
    signatures: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UnmaskReply:
    """Partner -> coordinator: its shares of survivors' seeds, its round keys with the dropped.

    ``seed_shares`` is keyed by the seed owners' ids (the Shamir index is the sender's 1-based
    position in the run's :class:`KeyBroadcast`); ``pair_keys`` by the dropped partners' ids:
    the key of this round's pairwise mask between the sender and that partner, which opens
    no other round's mask.
    """

    partner_id: str
    round: int
    seed_shares: dict[str, bytes]
    pair_keys: dict[str, bytes]
