"""Cryptographic building blocks of secure aggregation.

- X25519 key agreement, HKDF-SHA256, AES-256-GCM and Ed25519 from ``cryptography``;
- masks: a ChaCha20 keystream keyed by HKDF(full 32-byte agreed secret or seed, run id,
  label and round), read as little-endian ``uint64`` and reduced mod ``2**bits``; a
  dropped partner's pairwise masks are removed with these per-round keys, never with its
  long-term key, so no other round's mask is opened;
- Shamir t-of-n sharing: :mod:`.shamir`.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fedprofile.errors import ProtocolError

__all__ = [
    "KEY_BYTES",
    "SEED_BYTES",
    "advert_payload",
    "agree",
    "decrypt",
    "derive_key",
    "encrypt",
    "expand_mask",
    "mask_vector",
    "public_bytes",
    "round_key",
    "seed_commitment",
    "signed_by",
    "survivors_payload",
    "verify_advert",
]

_DOMAIN = b"fedprofile-secagg-v1"
SEED_BYTES = 32
"""Length of a round's self-mask seed."""
KEY_BYTES = 32
"""Length of a round's pairwise mask key (revealed for a partner that dropped)."""


def public_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    """Raw 32-byte public key of an X25519 or Ed25519 private key."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def advert_payload(run_id: bytes, partner_id: str, mask_key: bytes, enc_key: bytes) -> bytes:
    """The bytes a partner signs: domain, run id, its id and both public keys."""
    pid = partner_id.encode()
    return b"|".join([_DOMAIN, run_id.hex().encode(), str(len(pid)).encode(), pid,
                      mask_key.hex().encode(), enc_key.hex().encode()])


def survivors_payload(run_id: bytes, round: int, survivors: tuple[str, ...],
                      dropped: tuple[str, ...]) -> bytes:
    """The bytes a survivor signs to confirm a round's survivors and dropped partners."""
    return b"|".join([_DOMAIN, b"survivors", run_id.hex().encode(), str(round).encode(),
                      json.dumps([sorted(survivors), sorted(dropped)]).encode()])


def verify_advert(trusted: Ed25519PublicKey | None, signature: bytes, payload: bytes,
                  partner_id: str) -> None:
    """Raise :class:`ProtocolError` unless ``trusted`` signed ``payload`` with ``signature``."""
    if trusted is None:
        raise ProtocolError(f"Secure aggregation refused: partner {partner_id!r} has no trusted "
                            f"signing key; add it to the trusted partner keys.")
    if not signed_by(trusted, signature, payload):
        raise ProtocolError(f"Secure aggregation refused: the public keys of partner "
                            f"{partner_id!r} are not signed by its trusted key (swapped or "
                            f"forged keys).")


def signed_by(trusted: Ed25519PublicKey | None, signature: bytes, payload: bytes) -> bool:
    """Whether ``trusted`` (None: no key, so no) signed ``payload`` with ``signature``."""
    if trusted is None:
        return False
    try:
        trusted.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 shared secret (32 bytes) with a peer's raw public key."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise ProtocolError("Secure aggregation refused: a peer's public key is invalid.") \
            from exc


def derive_key(secret: bytes, *, run_id: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 of ``secret`` with the run id as salt: a 32-byte key for ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=run_id,
                info=_DOMAIN + b"|" + info).derive(secret)


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a random 96-bit nonce; returns ``nonce || ciphertext || tag``."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`encrypt`; a forged, moved or corrupted blob raises ProtocolError."""
    try:
        return AESGCM(key).decrypt(blob[:12], blob[12:], aad)
    except (InvalidTag, ValueError):
        raise ProtocolError("Secure aggregation refused: a relayed share failed authentication "
                            "(tampered, misaddressed or replayed).") from None


def round_key(secret: bytes, *, run_id: bytes, label: bytes, round: int) -> bytes:
    """The 32-byte key of one round's mask: HKDF of the secret, the run id, label and round.

    Revealing it opens that round's mask only: HKDF keys of other rounds stay pseudorandom.
    """
    return derive_key(secret, run_id=run_id, info=label + b"|" + round.to_bytes(8, "big"))


def expand_mask(key: bytes, *, dim: int, bits: int) -> np.ndarray:
    """A ChaCha20 keystream as ``dim`` uniform residues mod ``2**bits`` (``uint64``)."""
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    words = np.frombuffer(stream.update(bytes(8 * dim)), dtype="<u8").astype(np.uint64)
    return words & np.uint64((1 << bits) - 1)


def mask_vector(secret: bytes, *, run_id: bytes, label: bytes, round: int, dim: int,
                bits: int) -> np.ndarray:
    """Expand a secret into a uniform vector of ``dim`` residues mod ``2**bits`` (``uint64``)."""
    return expand_mask(round_key(secret, run_id=run_id, label=label, round=round), dim=dim,
                       bits=bits)


def seed_commitment(seed: bytes, *, run_id: bytes, partner_id: str, round: int) -> bytes:
    """SHA-256 commitment to a self-mask seed, so a wrong reconstruction is detected."""
    data = b"|".join([_DOMAIN, b"seed", run_id, partner_id.encode(), str(round).encode(), seed])
    return hashlib.sha256(data).digest()
