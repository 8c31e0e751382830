"""The command line: exit codes and messages for user mistakes, and the quick commands."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedprofile.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    (["sim", "--dataset", "bank", "--epsilon", "-1"], "positive number or 'inf'"),
    (["sim", "--dataset", "bank", "--k", "0"], "0 is not in the range"),
    (["sim", "--data", "nosuch.csv", "--spec", "specs/bank.toml", "--partition-by", "job"],
     "Data file 'nosuch.csv' does not exist"),
    (["sim", "--dataset", "bank", "--data", "x.csv"], "exactly one of --dataset"),
    (["sim", "--data", "data/bank-full.csv.gz"], "also give --spec"),
    (["sim", "--dataset", "nosuch"], "must be one of"),
    (["sim", "--dataset", "bank", "--partition-by", "nocolumn"], "'nocolumn' is not in"),
    (["sim", "--dataset", "bank", "--task", "ridge"], "needs a 'target' (a [target.NAME]"),
    (["ledger", "nosuch.sqlite"], "does not exist"),
    (["score", "--data", "data/bank-full.csv.gz", "--out", "x.csv"], "Give a response model"),
], ids=["negative-epsilon", "k-zero", "missing-file", "two-sources", "no-spec",
        "unknown-dataset", "unknown-partition-column", "ridge-without-target",
        "missing-ledger", "score-without-model"])
def test_user_mistakes_exit_2_with_a_message_naming_the_problem(args, message) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_bad_spec_names_the_feature_and_the_problem(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text("[features.age]\nkind = 'numeric'\nbounds = [95, 18]\n")
    result = runner.invoke(app, ["sim", "--data", "data/bank-full.csv.gz", "--spec", str(spec),
                                 "--partition-by", "job"])
    assert result.exit_code == 2
    assert "[features.age]" in result.output and "reversed" in result.output


def test_keygen_writes_a_private_key_file(tmp_path: Path) -> None:
    key = tmp_path / "federation.key"
    result = runner.invoke(app, ["keygen", "--out", str(key), "--key-id", "k-test"])
    assert result.exit_code == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = runner.invoke(app, ["keygen", "--out", str(key)])
    assert again.exit_code == 2


def test_certs_creates_ca_server_certificate_and_partner_keys(tmp_path: Path) -> None:
    result = runner.invoke(app, ["certs", "--out", str(tmp_path), "--partners", "2",
                                 "--host", "10.0.0.5"])
    assert result.exit_code == 0
    for name in ("certificates/ca.crt", "certificates/server.pem", "certificates/server.key",
                 "keys/partner-1", "keys/partner-2.pub"):
        assert (tmp_path / name).is_file()
    assert stat.S_IMODE((tmp_path / "keys" / "partner-1").stat().st_mode) == 0o600
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "certificates/server.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.0.0.5" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert "superlink" in sans.get_values_for_type(x509.DNSName)


def test_pseudonymize_streams_a_file_and_drops_raw_identities(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    runner.invoke(app, ["keygen", "--out", str(key)])
    raw = tmp_path / "raw.csv"
    raw.write_text("email,phone,spend\nAda@Example.com,07400 123456,3\nbad,,4\n")
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["pseudonymize", str(raw), "--key", str(key), "--email-col",
                                 "email", "--phone-col", "phone", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "Ada" not in text and "07400" not in text and "pid" in text
