"""The command line: exit codes and messages for user mistakes, and the quick commands."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedprofile.cli.commands import app

BANK = "fedprofile/data/bank-full.csv.gz"

runner = CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    (["sim", "--dataset", "bank", "--epsilon", "-1"], "positive number or 'inf'"),
    (["sim", "--dataset", "bank", "--k", "0"], "must be an int in [1, 100] or 'auto'"),
    (["sim", "--data", "nosuch.csv", "--spec", "fedprofile/specs/bank.toml",
      "--partition-by", "job"],
     "Data file 'nosuch.csv' does not exist"),
    (["sim", "--dataset", "bank", "--data", "x.csv"], "exactly one of --dataset"),
    (["sim", "--data", BANK], "also give --spec"),
    (["sim", "--dataset", "nosuch"], "must be one of"),
    (["sim", "--dataset", "bank", "--partition-by", "nocolumn"], "'nocolumn' is not in"),
    (["sim", "--dataset", "bank", "--task", "ridge"], "needs a 'target' (a [target.NAME]"),
    (["sim", "--dataset", "bank", "--task", "lookalike", "--seed-column", "y"],
     "needs a seed partner"),
    (["sim", "--dataset", "bank", "--task", "lookalike", "--seed-partner", "management"],
     "exactly one of a seed column, a seed expression or the seed owner's seed file"),
    (["ledger", "nosuch.sqlite"], "does not exist"),
    (["score", "--data", BANK, "--out", "x.csv"], "Give a response model"),
], ids=["negative-epsilon", "k-zero", "missing-file", "two-sources", "no-spec",
        "unknown-dataset", "unknown-partition-column", "ridge-without-target",
        "lookalike-without-seed-partner", "lookalike-without-seed",
        "missing-ledger", "score-without-model"])
def test_user_mistakes_exit_2_with_a_message_naming_the_problem(args, message) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_bad_spec_names_the_feature_and_the_problem(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text("[features.age]\nkind = 'numeric'\nbounds = [95, 18]\n")
    result = runner.invoke(app, ["sim", "--data", BANK, "--spec", str(spec),
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


def test_secagg_keys_exchange_gives_each_partner_the_others_keys(tmp_path: Path) -> None:
    import json

    printed = {}
    for name in ("bank", "shop"):
        result = runner.invoke(app, ["secagg-keys", "--state-dir", str(tmp_path / name),
                                     "--name", name])
        assert result.exit_code == 0
        printed[name] = result.output.strip()
        assert stat.S_IMODE((tmp_path / name / "secagg" / "signing.key").stat().st_mode) \
            == 0o600
    result = runner.invoke(app, ["secagg-keys", "--state-dir", str(tmp_path / "bank"),
                                 "--name", "bank", "--trust", printed["shop"]])
    assert result.exit_code == 0
    trusted = json.loads((tmp_path / "bank" / "secagg" / "partners.json").read_text())
    assert trusted == dict(line.split("=") for line in printed.values())
    bad = runner.invoke(app, ["secagg-keys", "--state-dir", str(tmp_path / "bank"),
                              "--name", "bank", "--trust", "shop=abc"])
    assert bad.exit_code == 2 and "64-hex-digit Ed25519" in bad.output


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


def test_help_shows_square_brackets() -> None:
    result = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["sim", "--help"])
    assert "(a [target.NAME] of the spec)" in result.output


@pytest.mark.parametrize("option", ["--out", "--state-dir"])
def test_output_folders_that_cannot_exist_are_refused_in_one_line(tmp_path: Path,
                                                                   option: str) -> None:
    # Prepare: a plain file where a folder should be, and a path below it
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    # Execute
    on_file = runner.invoke(app, ["sim", "--dataset", "bank", option, str(blocker)])
    below = runner.invoke(app, ["sim", "--dataset", "bank", option, str(blocker / "sub")])
    # Assert
    assert on_file.exit_code == below.exit_code == 2
    assert "is an existing file" in " ".join(on_file.output.split())
    assert "is a file, not a folder" in " ".join(below.output.split())
    assert "Traceback" not in on_file.output + below.output


def test_a_policy_file_is_checked_before_the_run(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("max_epsilon_per_run = 'lots'\n")
    result = runner.invoke(app, ["sim", "--dataset", "bank", "--policy", str(policy),
                                 "--out", str(tmp_path / "out"),
                                 "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "Simulating" not in result.output


def test_an_unexpected_error_prints_one_line_and_a_log_without_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a canary value in the data and a scoring step that fails unexpectedly,
    # quoting it in its message and holding it in its local variables
    canary = "CANARY-7d41e9"
    data = tmp_path / "customers.csv"
    data.write_text(f"customer_id,lines,spend\n{canary},2,40\n")

    def broken(frame, **_):
        value = str(frame.iloc[0, 0])
        raise ValueError(f"could not convert {value!r} to float")

    monkeypatch.setattr("fedprofile.models.scoring.score_customers", broken)
    monkeypatch.setenv("FEDPROFILE_LOG_DIR", str(tmp_path / "logs"))
    model = tmp_path / "segments.json"
    _segment_model().save(model)
    # Execute
    result = CliRunner().invoke(app, ["score", "--data", str(data), "--segments", str(model),
                                      "--out", str(tmp_path / "scores.csv")])
    # Assert: exit 1, one line naming the log; the canary is nowhere, the frames are
    assert result.exit_code == 1
    assert canary not in result.output
    assert len(result.output.strip().splitlines()) <= 2 and "Traceback" not in result.output
    logs = list((tmp_path / "logs").glob("fedprofile-error-*.log"))
    assert len(logs) == 1 and logs[0].name in "".join(result.output.split())
    text = logs[0].read_text()
    assert canary not in text
    assert "in broken" in text and "ValueError" in text


def _segment_model():
    import numpy as np

    from fedprofile.contract.parser import parse_spec
    from fedprofile.models.segment_model import SegmentModel

    spec = parse_spec({"federation": {"name": "shop"}, "features": {
        "lines": {"kind": "numeric", "bounds": [0, 10]},
        "spend": {"kind": "numeric", "bounds": [0, 100]}}}, source="shop.toml")
    return SegmentModel(spec=spec, centers=np.array([[-0.3, -0.1], [-0.4, 0.1]]),
                        sizes=np.array([100.0, 100.0]), min_segment_size=10, privacy={},
                        params={}, partners=["p1", "p2"])


def test_score_counts_customers_it_could_not_score_apart(tmp_path: Path) -> None:
    # Prepare: three customers, one with a value the contract drops
    data = tmp_path / "customers.csv"
    data.write_text("customer_id,lines,spend\nc1,2,40\nc2,1,50\nc3,,10\n")
    model = tmp_path / "segments.json"
    _segment_model().save(model)
    # Execute
    result = CliRunner(env={"COLUMNS": "300"}).invoke(app, [
        "score", "--data", str(data), "--segments", str(model), "--out",
        str(tmp_path / "scores.csv")])
    # Assert
    assert result.exit_code == 0, result.output
    assert "Scored 2 customers" in result.output
    assert "1 customers could not be scored" in result.output


def test_ledger_shows_the_largest_next_run_left_not_a_subtraction(tmp_path: Path) -> None:
    # Prepare: three epsilon-1 runs under a lifetime budget of 2 (they compose in GDP mu)
    from fedprofile.privacy.ledger import Ledger
    from fedprofile.server.kmeans import plan_kmeans

    db = tmp_path / "ledger.sqlite"
    with Ledger(db) as book:
        for run in range(3):
            book.start_run(run_id=f"r{run}", party="acme", epsilon_target=1.0, delta=1e-6)
            book.record(run_id=f"r{run}", party="acme", delta=1e-6, events=plan_kmeans(
                epsilon=1.0, delta=1e-6, lloyd_rounds=3, norm_bound=2.0).events())
    policy = tmp_path / "policy.toml"
    policy.write_text("max_epsilon_per_run = 1.0\ntotal_epsilon = 2.0\n")

    # Execute
    result = runner.invoke(app, ["ledger", str(db), "--policy", str(policy)])

    # Assert: 0.7512 fits (sqrt(mu_2^2 - 3 mu_1^2)), not 2 - 1.8138 = 0.1862
    assert result.exit_code == 0, result.output
    assert "0.7512" in result.output
    assert "0.1862" not in result.output
