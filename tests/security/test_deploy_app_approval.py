"""A partner's node runs only the apps its own allow-list approves.

Unit checks of the allow-list and the guard, and a loopback deployment (127.0.0.1) where a
coordinator runs an app whose ClientApp module writes a marker file when imported: unlisted,
the partner refuses it with an error reply and the marker never appears; once the partner
approves the app's digest, the same app runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import pytest

import fedprofile.client.app
from fedprofile.deploy.app_guard import (
    INSTALLED_MARKER,
    AppNotApprovedError,
    add_to_allow_list,
    app_folder,
    fab_metadata,
    fab_sha256,
    guard_pull,
    install_once,
    read_allow_list,
)
from fedprofile.deploy.approval import app_digest, approve_app
from fedprofile.deploy.loopback import LoopbackFederation
from fedprofile.deploy.partner_exec import check_allow_list
from fedprofile.errors import ContractError

DIGEST = "ab" * 32


def test_allow_list_round_trip_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "approved-apps.txt"
    assert add_to_allow_list(path, DIGEST.upper(), note="app 1.0")
    assert not add_to_allow_list(path, DIGEST)  # already there
    assert read_allow_list(path) == {DIGEST}
    path.write_text(path.read_text() + "# a comment\n\nnot-a-digest\n")
    with pytest.raises(ValueError, match="Line 4"):
        read_allow_list(path)


def test_launcher_refuses_to_start_without_an_approved_app(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="cannot be read"):
        check_allow_list(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    with pytest.raises(ContractError, match="approves no app"):
        check_allow_list(tmp_path / "empty.txt")


def _fab(app_id: str = "fedprofile/fedprofile", version: str = "0.2.0") -> bytes:
    """A minimal FAB (zip) whose pyproject declares ``app_id`` and ``version``."""
    publisher, name = app_id.split("/", 1)
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pyproject.toml", f'[project]\nname = "{name}"\nversion = "{version}"'
                                           f'\n[tool.flwr.app]\npublisher = "{publisher}"\n')
    return buffer.getvalue()


def _pulled(content: bytes, fab_hash: str | None = None, run_hash: str | None = None,
            version: str = "0.2.0", fab_id: str = "fedprofile/fedprofile"):
    digest = fab_sha256(content)
    fab = SimpleNamespace(content=content, hash_str=fab_hash or digest)
    run = SimpleNamespace(run_id=7, fab_hash=run_hash or digest, fab_id=fab_id,
                          fab_version=version)
    return lambda client: ("message", "context", run, fab)


_ESCAPE = "1/../../../victim"
_REFUSALS = {  # case: (FAB bytes, run's app id, run's version, words of the refusal)
    "unlisted": (_fab(), "fedprofile/fedprofile", "0.2.0", "not in the partner's approved"),
    "declared-hash-differs": (_fab(), "fedprofile/fedprofile", "0.2.0", "delivered FAB"),
    "allow-list-missing": (_fab(), "fedprofile/fedprofile", "0.2.0", "cannot be read"),
    "version-escapes-the-app-store": (_fab(version=_ESCAPE), "fedprofile/fedprofile", _ESCAPE,
                                      "do not name a folder"),
    "run-names-another-version": (_fab(), "fedprofile/fedprofile", "0.1.0",
                                  "declares app 'fedprofile/fedprofile' version '0.2.0'"),
    "run-names-another-app": (_fab(), "acme/other", "0.2.0", "the run names app 'acme/other'"),
    "not-a-fab": (b"fab bytes", "fedprofile/fedprofile", "0.2.0", "no readable pyproject"),
}


@pytest.mark.parametrize("case", list(_REFUSALS))
def test_guard_refuses_and_replies_with_an_error(tmp_path: Path, case: str, monkeypatch) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    content, fab_id, version, words = _REFUSALS[case]
    allow = tmp_path / "approved.txt"
    if case != "allow-list-missing":
        add_to_allow_list(allow, fab_sha256(content) if case != "unlisted" else DIGEST)
    original = _pulled(content, fab_hash=DIGEST if case == "declared-hash-differs" else None,
                       version=version, fab_id=fab_id)
    replies: list[str] = []
    pull = guard_pull(original, allow, lambda c, m, ctx, reason: replies.append(reason))
    with pytest.raises(AppNotApprovedError, match="Partner refused run 7"):
        pull(object())
    assert len(replies) == 1 and "No code of the app was loaded" in replies[0]
    assert words in replies[0]


def test_fab_metadata_reads_the_fabs_own_pyproject() -> None:
    assert fab_metadata(_fab("acme/segments", "3.1")) == ("acme/segments", "3.1")
    with pytest.raises(ValueError, match="no readable pyproject"):
        fab_metadata(_fab()[:-30])


@pytest.mark.parametrize(("fab_id", "version", "inside"), [
    ("fedprofile/fedprofile", "0.2.0", True), ("fedprofile/fedprofile", "1/../../x", False),
    ("fedprofile/../../x", "0.2.0", False), ("no-publisher", "0.2.0", False),
])
def test_the_app_folder_stays_in_the_partners_app_store(tmp_path, monkeypatch, fab_id, version,
                                                         inside) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    folder = app_folder(fab_id, version, DIGEST)
    assert (folder is not None) == inside
    if inside:
        assert folder.parent == tmp_path / "apps"


def test_guard_passes_an_approved_fab_through(tmp_path: Path) -> None:
    allow = tmp_path / "approved.txt"
    add_to_allow_list(allow, fab_sha256(_fab()))
    pull = guard_pull(_pulled(_fab()), allow, lambda *a: pytest.fail("refused"))
    assert pull(object())[3].content == _fab()


def _marker_app(root: Path, marker: Path) -> Path:
    """A Flower app whose ClientApp module writes ``marker`` when it is imported."""
    app = root / "markerapp"
    (app / "markerapp").mkdir(parents=True)
    (app / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "markerapp"
        version = "1.0.0"
        dependencies = ["flwr==1.41.0"]

        [tool.flwr.app]
        publisher = "attacker"

        [tool.flwr.app.components]
        serverapp = "markerapp.server_app:app"
        clientapp = "markerapp.client_app:app"

        [tool.flwr.app.config]
        out = ""
        """))
    (app / "markerapp" / "__init__.py").write_text("")
    (app / "markerapp" / "client_app.py").write_text(textwrap.dedent(f"""\
        from pathlib import Path

        from flwr.app import ConfigRecord, Message, RecordDict
        from flwr.clientapp import ClientApp

        Path({str(marker)!r}).write_text("imported")  # the code a partner must not run

        app = ClientApp()


        @app.query()
        def query(msg, context):
            return Message(RecordDict({{"r": ConfigRecord({{"ok": 1}})}}), reply_to=msg)
        """))
    (app / "markerapp" / "server_app.py").write_text(textwrap.dedent("""\
        import json
        import time
        from pathlib import Path

        from flwr.app import ConfigRecord, Message, RecordDict
        from flwr.serverapp import ServerApp

        app = ServerApp()


        @app.main()
        def main(grid, context):
            nodes = []
            while not nodes:
                nodes = list(grid.get_node_ids())
                time.sleep(0.5)
            msg = Message(RecordDict({"q": ConfigRecord({"x": 1})}), dst_node_id=nodes[0],
                          message_type="query")
            reply = list(grid.send_and_receive([msg], timeout=90))[0]
            result = {"error": reply.error.reason} if reply.has_error() else {"ok": True}
            Path(context.run_config["out"]).write_text(json.dumps(result))
        """))
    return app


@pytest.mark.slow
def test_partner_refuses_an_unapproved_app_without_importing_it(tmp_path: Path) -> None:
    # Prepare: one partner; the coordinator's app writes a marker file when imported
    marker = tmp_path / "marker"
    app = _marker_app(tmp_path, marker)
    fed = LoopbackFederation(root=tmp_path / "fed", partners=[{"partner-name": "p1"}],
                             app_dir=app)
    with fed.running():
        digest = fed.app_digest
        fed.allow_list(0).write_text(f"{DIGEST}  # some other app\n")  # not this one
        fed.start_partner(0)
        # Execute: the coordinator runs the unapproved app
        out = tmp_path / "refused.json"
        done = fed.run({"out": str(out)}, timeout=300)
        # Assert: an error reply names the digest; no module of the app was imported
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        result = json.loads(out.read_text())
        assert "Partner refused" in result["error"] and digest in result["error"]
        assert not marker.exists()
        assert not list((fed.partner_home(0) / "apps").glob("*"))  # not even unpacked
        # Execute: the partner approves exactly this app; the same run config runs it
        assert approve_app(fed.app_dir, fed.allow_list(0)) == (digest, True)
        out_ok = tmp_path / "approved.json"
        done = fed.run({"out": str(out_ok)}, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:]
        assert json.loads(out_ok.read_text()) == {"ok": True}
        assert marker.read_text() == "imported"
    assert fed.alive() == []


def test_approval_digest_is_the_digest_flwr_run_ships(tmp_path: Path) -> None:
    from flwr.cli.build import build_fab_from_disk

    app = _marker_app(tmp_path, tmp_path / "marker")
    fab = build_fab_from_disk(app)
    (tmp_path / "app.fab").write_bytes(fab)
    assert app_digest(app) == app_digest(tmp_path / "app.fab") == fab_sha256(fab)
    (app / "markerapp" / "client_app.py").write_text("app = None  # edited\n")
    assert app_digest(app) != fab_sha256(fab)


def test_cli_approve_app_adds_the_digest_to_a_partner_allow_list(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedprofile.cli.commands import app as cli

    app = _marker_app(tmp_path, tmp_path / "marker")
    allow = tmp_path / "partner" / "approved-apps.txt"
    result = CliRunner().invoke(cli, ["approve-app", str(app), "--allow-list", str(allow)])
    assert result.exit_code == 0, result.output
    assert read_allow_list(allow) == {app_digest(app)}
    assert app_digest(app) in result.output
    assert not (tmp_path / "marker").exists()  # hashing an app does not import it
    bad = CliRunner().invoke(cli, ["approve-app", str(tmp_path / "nowhere")])
    assert bad.exit_code != 0 and "neither a .fab file" in " ".join(bad.output.split())


def test_a_fab_cannot_replace_the_partners_installed_clientapp(tmp_path: Path) -> None:
    # A FAB on the front of sys.path (where Flower puts an installed app) ships its own
    # fedprofile.client.app; the guarded process has already imported the partner's package
    fab = tmp_path / "fab"
    (fab / "fedprofile" / "client").mkdir(parents=True)
    (fab / "fedprofile" / "__init__.py").write_text("")
    (fab / "fedprofile" / "client" / "__init__.py").write_text("")
    (fab / "fedprofile" / "client" / "app.py").write_text("raise SystemExit('FAB code ran')\n")
    probe = ("import importlib, sys\n"
             "import fedprofile.deploy.app_guard\n"
             f"sys.path.insert(0, {str(fab)!r})\n"
             "print(importlib.import_module('fedprofile.client.app').__file__)\n")

    done = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)

    assert done.returncode == 0, done.stderr[-2000:]
    loaded = Path(done.stdout.strip())
    assert loaded.name == "app.py" and not loaded.is_relative_to(fab)
    assert loaded.samefile(Path(fedprofile.client.app.__file__))


def test_an_app_folder_is_unpacked_once_per_fab_and_never_shared(tmp_path: Path) -> None:
    target = tmp_path / "apps" / "fedprofile.fedprofile.0.2.0.abcdef01"
    unpacked: list[str] = []

    def install(tag: str):
        def run() -> Path:
            unpacked.append(tag)
            target.mkdir(parents=True, exist_ok=True)
            (target / "app.py").write_text(tag)
            return target
        return run

    assert install_once(install("first"), DIGEST, target) == target
    assert install_once(install("again"), DIGEST, target) == target
    assert unpacked == ["first"]  # the second task reuses the verified folder

    # another FAB whose digest shares the 8 hex digits Flower names the folder by
    other = DIGEST[:8] + "cd" * 28
    install_once(install("other"), other, target)
    assert unpacked == ["first", "other"]
    assert (target / "app.py").read_text() == "other"
    assert (target / INSTALLED_MARKER).read_text() == other

    # a folder without the marker (unpacked by Flower itself) is not trusted either
    (target / INSTALLED_MARKER).unlink()
    install_once(install("fresh"), other, target)
    assert unpacked == ["first", "other", "fresh"]

    # a FAB that lands in another folder than the run names is refused, and is not marked
    elsewhere = tmp_path / "apps" / "acme.other.9.abcdef01"

    def install_elsewhere() -> Path:
        elsewhere.mkdir(parents=True)
        return elsewhere

    with pytest.raises(AppNotApprovedError, match="not into the folder its run names"):
        install_once(install_elsewhere, DIGEST, target)
    assert not (elsewhere / INSTALLED_MARKER).exists()
