"""Secure aggregation at the partner: policy checks, keys, and the protocol state on disk.

The partner signs its per-run public keys with its Ed25519 key
(``<state-dir>/secagg/signing.key``, made on first use) and checks every other partner's
signature against ``<state-dir>/secagg/partners.json`` (partner name -> hex public key),
which the federation's administrators write; without it the partner refuses secure
aggregation. Between messages its protocol state is kept in ``<state-dir>/secagg/``,
readable by the partner's user only: one file per secure-aggregation run (one stage of a
fedprofile run), ``<secagg-id>.json``, holding that run's secret X25519 keys, the current
round's self-mask seed and the other partners' key and seed shares. A message's handler
holds the run's lock (``<secagg-id>.lock``, an exclusive ``flock``) from reading that file
to writing it back, so two messages of one run are never handled on the same state at once.

Those secrets are not kept after use. The file is deleted when the partner has answered the
unmask step of the stage's last planned release (its ledger holds every release the run's
accepted plan has for that stage). A run that ends otherwise (aborted, a partner refused, the
coordinator vanished) leaves its file behind; every new key setup deletes the files of
secure-aggregation runs not written for :data:`STALE_AFTER` seconds (24 hours). Every message
of a run rewrites its file, so only a run idle for that long loses its keys; its next message
is then refused. Deletion unlinks the file; it does not overwrite the disk blocks.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from flwr.app import RecordDict

from fedprofile.client.site import PartnerSite
from fedprofile.errors import ContractError, ProtocolError, SecureAggregationRefusedError
from fedprofile.privacy.events import GaussianEvent, PrivacyEvent, SkellamEvent
from fedprofile.privacy.secagg.messages import (
    Confirmation,
    ConfirmRequest,
    KeyAdvert,
    KeyBroadcast,
    KeysAgreed,
    MaskRequest,
    UnmaskReply,
    UnmaskRequest,
)
from fedprofile.privacy.secagg.noise import ORDERS, gaussian_rdp
from fedprofile.privacy.secagg.partner import SecaggPartner
from fedprofile.privacy.secagg.plan import fewest_secure_partners
from fedprofile.protocol.secagg import (
    RING_BITS,
    SecaggMasked,
    SecaggSetup,
    SecureSum,
    encode,
    mask_request,
)

__all__ = ["STALE_AFTER", "Masked", "Reply", "as_skellam", "check_secure_aggregation",
           "masked_release", "prune_state", "secagg_agree", "secagg_confirm", "secagg_keys",
           "secagg_unmask", "trust_each_other", "trusted_keys_path"]


STALE_AFTER = 24 * 3600.0
"""Seconds after its last message when another run's secagg state file is deleted."""
_STATE_FILE = re.compile(r"(tmp-)?[0-9a-f]{32}\.(json|lock)")
_SETUP_NOTE = "secagg-setup"
"""Ledger note naming each key setup this partner opened (an id is never accepted twice)."""
_Result = TypeVar("_Result")
_NO_RUN = "Secure aggregation refused: the message belongs to no run this partner joined."


def _folder(site: PartnerSite) -> Path:
    folder = site.state_dir / "secagg"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def trusted_keys_path(state_dir: Path) -> Path:
    """Where a partner reads the other partners' public signing keys."""
    return state_dir / "secagg" / "partners.json"


def signing_key(state_dir: Path) -> Ed25519PrivateKey:
    """The partner's Ed25519 signing key, made (owner-only) on first use."""
    (state_dir / "secagg").mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / "secagg" / "signing.key"
    if not path.is_file():
        key = Ed25519PrivateKey.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        return key
    loaded = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ContractError("The partner's secure-aggregation signing key is not Ed25519.")
    return loaded


def public_key_hex(state_dir: Path) -> str:
    """The partner's public signing key (hex), to give the other partners' administrators."""
    return signing_key(state_dir).public_key().public_bytes(Encoding.Raw,
                                                            PublicFormat.Raw).hex()


def trust_keys(state_dir: Path, keys: dict[str, str]) -> Path:
    """Write the partners' public signing keys (name -> hex) this partner will accept.

    Raises
    ------
    ContractError
        If a name is empty or a key is not a hex Ed25519 public key.
    """
    for name, value in keys.items():
        try:
            if not name.strip():
                raise ValueError("empty partner name")
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
        except ValueError as exc:
            raise ContractError(f"Trusted key {name!r}: expected a partner name and a "
                                f"64-hex-digit Ed25519 public key ({exc}).") from None
    path = trusted_keys_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps(keys, indent=1), encoding="utf-8")
    return path


def trust_each_other(state_dirs: dict[str, Path]) -> None:
    """Give every partner the others' public signing keys (their administrators' step)."""
    public = {name: public_key_hex(Path(d)) for name, d in state_dirs.items()}
    for d in state_dirs.values():
        trust_keys(Path(d), public)


def _trusted(site: PartnerSite) -> dict[str, Ed25519PublicKey]:
    path = trusted_keys_path(site.state_dir)
    if not path.is_file():
        return {}
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): Ed25519PublicKey.from_public_bytes(bytes.fromhex(v))
                for k, v in names.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ContractError(f"The partner's trusted secure-aggregation keys are not a JSON "
                            f"object of partner name -> hex Ed25519 public key ({exc}).") from None


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _bytes(value: Any) -> Any:
    if isinstance(value, dict):
        return bytes.fromhex(value["hex"]) if set(value) == {"hex"} else {
            k: _bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bytes(v) for v in value]
    return value


def _save(site: PartnerSite, partner: SecaggPartner, info: dict[str, Any]) -> None:
    """Write the protocol state durably before any reply leaves.

    A crash after a reply must not bring back a state that, say, has not confirmed the list
    of survivors it signed.
    """
    setup = partner.export_state()["setup"]
    folder = _folder(site)
    path = folder / f"{bytes(setup[0]).hex()}.json"
    tmp = path.with_name(f"tmp-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"info": info, "state": _plain(partner.export_state())}, out)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    _sync_folder(folder)


def _delete(site: PartnerSite, secagg_id: bytes) -> None:
    """Delete a run's state and lock durably before any reply leaves.

    A deletion lost to a power cut would bring back the state from before the last unmask
    (not yet answered), which could then be led to reveal a second secret for that round.
    """
    state = _state_path(site, secagg_id)
    state.unlink(missing_ok=True)
    state.with_suffix(".lock").unlink(missing_ok=True)
    _sync_folder(state.parent)


def _sync_folder(folder: Path) -> None:
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _load(site: PartnerSite, secagg_id: bytes) -> tuple[SecaggPartner, dict[str, Any]]:
    path = _state_path(site, secagg_id)
    if not path.is_file():
        raise ProtocolError(_NO_RUN)
    saved = json.loads(path.read_text(encoding="utf-8"))
    partner = SecaggPartner.restore(site.name, signing_key(site.state_dir), _trusted(site),
                                    _bytes(saved["state"]))
    return partner, saved["info"]


def _state_path(site: PartnerSite, secagg_id: bytes) -> Path:
    return site.state_dir / "secagg" / f"{secagg_id.hex()}.json"


@contextmanager
def _run_lock(site: PartnerSite, secagg_id: bytes, *, new: bool = False) -> Iterator[None]:
    """Hold the run's exclusive lock from loading its state to saving (or deleting) it.

    A SuperNode hands its ClientApp one message at a time, but a partner's state directory
    may serve more than one process (a restarted node, a second node by mistake); without
    the lock two of them could, say, each pass the round check on the same old state. Only
    a key setup (``new``) makes a lock for a run without state.
    """
    if not new and not _state_path(site, secagg_id).is_file():
        raise ProtocolError(_NO_RUN)
    fd = os.open(_folder(site) / f"{secagg_id.hex()}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def prune_state(site: PartnerSite, *, now: float | None = None) -> list[Path]:
    """Delete the state files of secure-aggregation runs idle for :data:`STALE_AFTER`.

    A run's state goes together with its lock, and only while this holds that lock: a
    message of the run being handled keeps it, and one waiting for the lock finds no state
    and is refused. A lock goes only with its run's state.
    """
    folder = site.state_dir / "secagg"
    limit = (time.time() if now is None else now) - STALE_AFTER
    removed: list[Path] = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if not _STATE_FILE.fullmatch(path.name) or _modified(path) >= limit:
            continue
        if path.name.startswith("tmp-"):  # left by a crash between writing and renaming
            path.unlink(missing_ok=True)
            removed.append(path)
            continue
        state, lock = path.with_suffix(".json"), path.with_suffix(".lock")
        if path == lock and state.exists():
            continue
        had_lock = lock.exists()
        with _lock_if_free(lock) as free:
            if free and _modified(path) < limit:
                gone = [p for p, kept in ((state, state.exists()), (lock, had_lock)) if kept]
                state.unlink(missing_ok=True)
                lock.unlink()
                removed += gone
    return removed


@contextmanager
def _lock_if_free(lock: Path) -> Iterator[bool]:
    """Take ``lock`` if no one holds it (True), else do not wait (False)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def _modified(path: Path) -> float:
    """When ``path`` was last written; infinitely recent if another run just renamed it."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return math.inf


def check_secure_aggregation(site: PartnerSite, *, partners: int, dropouts: int) -> None:
    """Refuse a secure aggregation of ``partners`` (``t = dropouts``) the policy does not allow.

    Checked when the run is announced and again at each stage's key setup. Raises
    :class:`SecureAggregationRefusedError` naming the partner and the limit.
    """
    policy, m, t = site.policy, partners, dropouts
    floor = policy.min_secure_aggregation_partners
    if floor == 0:
        raise SecureAggregationRefusedError(
            f"Partner {site.name!r} does not take part in secure aggregation: its policy sets "
            "'min_secure_aggregation_partners' = 0 (it adds all the noise itself).")
    if t < policy.min_secure_aggregation_dropouts:
        raise SecureAggregationRefusedError(
            f"Partner {site.name!r} refuses secure aggregation declaring t = {t} dropouts: "
            f"its policy 'min_secure_aggregation_dropouts' = "
            f"{policy.min_secure_aggregation_dropouts} needs t >= "
            f"{policy.min_secure_aggregation_dropouts} (run config 'secagg-dropouts').")
    if m < max(floor, fewest_secure_partners(t)):
        raise SecureAggregationRefusedError(
            f"Partner {site.name!r} refuses secure aggregation with {m} partners: it needs at "
            f"least {max(floor, fewest_secure_partners(t))} (policy "
            f"'min_secure_aggregation_partners' = {floor}, and max(t + 2, 2t + 1) for t = {t} "
            "dropouts).")
    others = set(_trusted(site)) - {site.name}
    if len(others) < m - 1:
        raise SecureAggregationRefusedError(
            f"Partner {site.name!r} cannot check the keys of a secure aggregation of {m} "
            f"partners: it trusts the signing keys of {len(others)} other partner(s) "
            "(<state-dir>/secagg/partners.json, written by `fedprofile secagg-keys`).")


def secagg_keys(setup: SecaggSetup, site: PartnerSite) -> KeyAdvert:
    """Check a secure-aggregation run against the policy, then advertise signed keys."""
    m, t = setup.partners, setup.dropouts
    site.guard.check_announced(run_id=setup.run_id, stage=setup.stage)
    check_secure_aggregation(site, partners=m, dropouts=t)
    request = setup.request
    if len(request.roster) != m or request.min_survivors < m - t:
        raise ProtocolError(f"Secure aggregation refused: the roster of {len(request.roster)} "
                            f"and minimum of {request.min_survivors} survivors do not match "
                            f"the plan of m = {m}, t = {t}.")
    if request.bits != RING_BITS:
        raise ProtocolError(f"Secure aggregation refused: a ring of 2**{request.bits}; this "
                            f"partner's secure sums are planned on 2**{RING_BITS}.")
    if not 2 * t + 1 <= request.threshold <= m:
        raise ProtocolError(f"Secure aggregation refused: the threshold {request.threshold} "
                            f"must be at least 2t + 1 = {2 * t + 1} (t partners may collude with "
                            f"the coordinator) and at most the m = {m} partners.")
    most = site.policy.max_candidate_centres * (site.spec.dim + 1) + 1
    if request.dim > most:
        raise ProtocolError(f"Secure aggregation refused: vectors of {request.dim} values; "
                            f"this partner accepts at most {most}.")
    prune_state(site)
    secagg_id = request.run_id.hex()
    with _run_lock(site, request.run_id, new=True):
        if site.ledger.has_note(kind=_SETUP_NOTE, message=secagg_id):
            raise ProtocolError(f"Secure aggregation refused: the key setup {secagg_id} was "
                                "opened before; every setup must be new (a repeated one could "
                                "replay old keys).")
        partner = SecaggPartner(site.name, signing_key(site.state_dir), _trusted(site),
                                min_survivors=max(m - t, 2))
        advert = partner.advertise(request)
        _save(site, partner, {"run_id": setup.run_id, "stage": setup.stage, "partners": m,
                              "dropouts": t})
        site.ledger.note(run_id=setup.run_id, party=site.name, kind=_SETUP_NOTE,
                         message=secagg_id)
    return advert


def _advance(site: PartnerSite, secagg_id: bytes, step: Callable[[SecaggPartner], _Result]
             ) -> _Result:
    """Take one protocol step on the run's saved state, under its lock, and save it."""
    with _run_lock(site, secagg_id):
        partner, info = _load(site, secagg_id)
        out = step(partner)
        _save(site, partner, info)
    return out


def secagg_agree(broadcast: KeyBroadcast, site: PartnerSite) -> KeysAgreed:
    """Check every relayed advert's signature and agree the pairwise keys."""
    return _advance(site, broadcast.run_id, lambda partner: partner.agree_keys(broadcast))


def as_skellam(event: PrivacyEvent) -> PrivacyEvent:
    """The planned Gaussian release as the Skellam release it is made as (RDP-accounted)."""
    if not isinstance(event, GaussianEvent):
        return event
    return SkellamEvent(noise_multiplier=event.noise_multiplier, sensitivity=event.sensitivity,
                        stage=event.stage, round=event.round, component=event.component)


def masked_release(site: PartnerSite, mask: MaskRequest, *, run_id: str, stage: str,
                   secure_sum: SecureSum, values: list[np.ndarray],
                   events: tuple[PrivacyEvent, ...], rng: np.random.Generator) -> SecaggMasked:
    """Authorize ``events`` on the guaranteed noise, then send only the masked vector.

    The check: with ``m - t`` honest shares (the others dropped out or collude), each
    statistic's Skellam noise costs no more, at every Renyi order, than the Gaussian release
    ``events`` describes; the ledger then records them as Skellam releases (accounted in
    RDP) and a note of the shares.
    """
    with _run_lock(site, mask.run_id):
        partner, info = _load(site, mask.run_id)
        if (info["run_id"], info["stage"]) != (run_id, stage):
            raise ProtocolError(f"Secure aggregation refused: the mask request's key setup "
                                f"belongs to run {info['run_id']!r}, stage {info['stage']!r}, "
                                f"not {run_id!r}, {stage!r}.")
        if secure_sum.dim > mask.dim:
            raise ProtocolError(f"Secure aggregation refused: the round's {secure_sum.dim} "
                                f"values do not fit masked vectors of {mask.dim}.")
        plans = secure_sum.plans(int(info["partners"]), int(info["dropouts"]))
        for plan, (name, _, _, z) in zip(plans, secure_sum.parts, strict=True):
            if z > 0 and np.any(plan.rdp() > gaussian_rdp(ORDERS, 1.0 / z) * (1 + 1e-9)):
                raise ProtocolError(f"Secure aggregation refused: the guaranteed noise of "
                                    f"{name!r} is below the planned release.")  # pragma: no cover
        partner.check_round(mask)  # before the release is recorded
        events = tuple(map(as_skellam, events))
        site.guard.authorize(run_id=run_id, stage=stage, events=events)
        site.ledger.note(run_id=run_id, party=site.name, kind="secagg", message=json.dumps(
            {"round": mask.round, "releases": [{"component": part[0], **plan.ledger_fields(
                len(mask.participants))} for plan, part in zip(plans, secure_sum.parts,
                                                                strict=True)]}))
        vector = secure_sum.encode(plans, values, mask.dim, rng)
        masked = partner.mask(mask, vector)
        _save(site, partner, info)
    return SecaggMasked(masked, events)


def secagg_confirm(request: ConfirmRequest, site: PartnerSite) -> Confirmation:
    """Sign the round's list of survivors (after a dropout); the partner keeps to that list."""
    return _advance(site, request.run_id, lambda partner: partner.confirm(request))


def secagg_unmask(request: UnmaskRequest, site: PartnerSite) -> UnmaskReply:
    """Reveal the shares that unmask the survivors' sum, and nothing more.

    After the stage's last planned release the run's secrets are deleted, not saved.
    """
    with _run_lock(site, request.run_id):
        partner, info = _load(site, request.run_id)
        reply = partner.unmask(request)
        if site.guard.pending(run_id=info["run_id"], stage=info["stage"]) == 0:
            _delete(site, request.run_id)
        else:
            _save(site, partner, info)
    return reply


@dataclass(frozen=True)
class Masked:
    """A stage request and, under ``noise = 'secagg'``, its mask request."""

    request: Any
    mask: MaskRequest | None

    @property
    def task(self) -> Any:
        """The request's run, for refusal notes (a response task or the request itself)."""
        return getattr(self.request, "task", self.request)

    @staticmethod
    def parser(kind: Any) -> Callable[[RecordDict], Masked]:
        """Decode a ``kind`` request and its mask request, if any."""
        return lambda content: Masked(kind.from_record(content), mask_request(content))


@dataclass(frozen=True)
class Reply:
    """A secure-aggregation reply, encoded by :func:`fedprofile.protocol.secagg.encode`."""

    message: Any

    def to_record(self) -> RecordDict:
        """Encode as a RecordDict."""
        return encode(self.message)
