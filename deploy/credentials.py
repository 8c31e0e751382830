"""Deployment credentials made with ``cryptography``.

A CA, the SuperLink's TLS certificate and one SuperNode authentication key pair per
partner (ECDSA P-384, OpenSSH format, as Flower 1.41's ``--auth-supernode-private-key``
and ``flwr supernode register`` expect).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedprofile.errors import ContractError

__all__ = ["Credentials", "create_credentials", "create_superexec_secret"]

_VALID_DAYS = 365


@dataclass(frozen=True)
class Credentials:
    """Paths of the files :func:`create_credentials` wrote."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    partner_keys: tuple[tuple[Path, Path], ...]  # (private, public) per partner


def _write(path: Path, data: bytes, *, private: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedprofile federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _sans(hosts: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def create_superexec_secret(path: Path) -> Path:
    """Write a random SuperExec secret (mode 0600) shared by a partner's SuperNode and launcher.

    Given to ``flower-supernode --superexec-auth-secret-file`` and to the partner's launcher,
    it keeps any other process from taking the node's tasks over its runtime API.
    """
    return _write(path, secrets.token_hex(32).encode("ascii"), private=True)


def create_password(path: Path) -> Path:
    """Write a random password to ``path``, owner-only (mode 0600) from its creation."""
    return _write(path, secrets.token_urlsafe(24).encode("ascii"), private=True)


def create_credentials(out: Path, *, partners: int, hosts: list[str] | None = None
                       ) -> Credentials:
    """Create a CA, a SuperLink certificate for ``hosts`` and ``partners`` SuperNode keys.

    ``hosts`` are added to ``localhost``, ``superlink``, ``fleet-gateway``, ``127.0.0.1`` and
    ``::1`` as subject alternative names (the gateway serves the same certificate). Private
    keys are written with mode 0600.
    """
    if partners < 1:
        raise ContractError(f"The 'partners' parameter must be >= 1. Got {partners!r}.")
    names = ["localhost", "superlink", "fleet-gateway", "127.0.0.1", "::1", *(hosts or [])]
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name("fedprofile CA"))
               .issuer_name(_name("fedprofile CA")).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA384()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (x509.CertificateBuilder().subject_name(_name("superlink"))
                   .issuer_name(ca_cert.subject).public_key(server_key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
                   .add_extension(_sans(list(dict.fromkeys(names))), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .sign(ca_key, hashes.SHA384()))
    pem = serialization.Encoding.PEM
    certs = out / "certificates"
    paths = [_write(certs / "ca.crt", ca_cert.public_bytes(pem), private=False),
             _write(certs / "server.pem", server_cert.public_bytes(pem), private=False),
             _write(certs / "server.key", _pem_key(server_key), private=True)]
    _write(certs / "ca.key", _pem_key(ca_key), private=True)
    keys = []
    for i in range(1, partners + 1):
        key = ec.generate_private_key(ec.SECP384R1())
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
        keys.append((_write(out / "keys" / f"partner-{i}", private, private=True),
                     _write(out / "keys" / f"partner-{i}.pub", public, private=False)))
    return Credentials(ca_cert=paths[0], server_cert=paths[1], server_key=paths[2],
                       partner_keys=tuple(keys))
