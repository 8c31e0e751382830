"""The partner's app allow-list and the guarded ClientApp process.

A partner's node executes the code the coordinator ships (the FAB) next to its raw data and
pseudonymisation key, so the partner decides which FABs may run: its allow-list file holds
the SHA-256 of every FAB it approved (``fedprofile approve-app``). The partner's launcher
(:mod:`fedprofile.deploy.partner_exec`) starts every ClientApp through :func:`main` here,
which pulls the task's FAB from the partner's own SuperNode, hashes the bytes it received
and compares the digest with the allow-list *before* the FAB is unpacked or any of its code
imported. An unlisted FAB gets an error reply naming its digest, and nothing of it runs.

This module runs in the process that later loads the approved app. That process has
imported the partner's *installed* ``fedprofile`` package (this module is part of it), so
fedprofile's own ClientApp always runs the partner's installed code: an approved FAB lets a run
start, it cannot replace that code. Modules a FAB ships under other names load from the FAB,
and only once its digest is approved. :mod:`fedprofile.deploy.warm_start` explains the warm
processes the launcher forks for each task.

Allow-list file format: one lowercase hex SHA-256 per line; text after the digest and lines
starting with ``#`` are comments.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import tomllib
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

__all__ = ["INSTALLED_MARKER", "TOKEN_ENV", "AppNotApprovedError", "add_to_allow_list",
           "app_folder", "fab_metadata", "fab_sha256", "guard_pull", "install_once", "main",
           "read_allow_list", "run_task"]

TOKEN_ENV = "FEDPROFILE_TASK_TOKEN"
INSTALLED_MARKER = ".fedprofile-fab-sha256"
"""File in an unpacked app folder naming the full digest of the FAB it came from."""
_DIGEST = re.compile(r"[0-9a-f]{64}")


class AppNotApprovedError(RuntimeError):
    """The FAB of a task is not in the partner's allow-list; nothing of it was loaded."""


def fab_sha256(content: bytes) -> str:
    """SHA-256 (hex) of a FAB's bytes, the identity Flower gives a FAB."""
    return hashlib.sha256(content).hexdigest()


def read_allow_list(path: Path) -> frozenset[str]:
    """Approved FAB digests in ``path``.

    Raises
    ------
    OSError
        The file cannot be read.
    ValueError
        A line is neither a comment nor starts with a SHA-256 hex digest.
    """
    approved: set[str] = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        digest = text.split()[0].lower()
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"Line {number} of the allow-list {path} does not start with a "
                             "SHA-256 hex digest (64 hex characters).")
        approved.add(digest)
    return frozenset(approved)


def add_to_allow_list(path: Path, digest: str, note: str = "") -> bool:
    """Add ``digest`` to the allow-list at ``path`` (created with mode 0644); True if new."""
    digest = digest.lower()
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"Not a SHA-256 hex digest: {digest!r}.")
    path = Path(path)
    if path.exists() and digest in read_allow_list(path):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    comment = " ".join(f"{note} approved {stamp}".split())
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"{digest}  # {comment}\n")
    return True


def _refusal(allow_list: Path, digest: str, fab_hash: str, run_fab_hash: str) -> str | None:
    """Why the FAB may not run, or None when it is approved."""
    try:
        approved = read_allow_list(allow_list)
    except (OSError, ValueError) as exc:
        return f"the partner's allow-list cannot be read ({exc})"
    if digest not in approved:
        return f"app sha256 {digest} is not in the partner's approved apps"
    if fab_hash != digest or run_fab_hash != digest:
        return f"the run names FAB {run_fab_hash or '?'} but delivered FAB {digest}"
    return None


def fab_metadata(content: bytes) -> tuple[str, str]:
    """The app id (``publisher/name``) and version a FAB's own ``pyproject.toml`` declares.

    Flower unpacks a FAB into a folder named from these, and loads the task's app from a
    folder named from the run's id and version; the two must agree.

    Raises
    ------
    ValueError
        The bytes are not a zip archive with a readable ``pyproject.toml`` naming both.
    """
    from flwr.common.config import get_metadata_from_config

    try:
        with zipfile.ZipFile(BytesIO(content)) as archive:
            config = tomllib.loads(archive.read("pyproject.toml").decode("utf-8"))
        fab_id, version = get_metadata_from_config(config)
    except (zipfile.BadZipFile, KeyError, TypeError, UnicodeDecodeError,
            tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"the FAB has no readable pyproject.toml with an app id and version "
                         f"({type(exc).__name__}: {exc})") from exc
    return str(fab_id), str(version)


def _folder_refusal(run: Any, content: bytes, digest: str) -> str | None:
    """Why the run's app folder may not be used for this FAB, or None."""
    try:
        fab_id, version = fab_metadata(content)
    except ValueError as exc:
        return str(exc)
    if (fab_id, version) != (run.fab_id, run.fab_version):
        return (f"the run names app {run.fab_id!r} version {run.fab_version!r} but the FAB "
                f"declares app {fab_id!r} version {version!r}")
    if app_folder(run.fab_id, run.fab_version, digest) is None:
        return (f"the run's app id {run.fab_id!r} and version {run.fab_version!r} do not name "
                "a folder of the partner's app store")
    return None


def app_folder(fab_id: str, fab_version: str, digest: str) -> Path | None:
    """The folder Flower unpacks and loads the task's app in, or None if it is outside.

    None unless it is one folder directly in the partner's app store (``$FLWR_HOME/apps``):
    Flower builds it from the run's app id and version, which come from the coordinator, not
    from the approved FAB: a version such as ``1/../../..`` would name any folder.
    """
    from flwr.common.config import get_project_dir
    from flwr.common.constant import APP_DIR
    from flwr.supercore.utils import get_flwr_home

    try:
        folder = Path(get_project_dir(fab_id, fab_version, digest))
    except ValueError:  # an id without exactly one "/"
        return None
    store = (get_flwr_home() / APP_DIR).resolve()
    return folder if folder.resolve().parent == store else None


def guard_pull(original: Callable[[Any], tuple[Any, Any, Any, Any]], allow_list: Path,
               refuse: Callable[[Any, Any, Any, str], None]
               ) -> Callable[[Any], tuple[Any, Any, Any, Any]]:
    """Wrap Flower's ``pull_task_input`` so only an approved FAB comes out of it.

    The FAB must also declare the app id and version the run names, so the folder Flower
    unpacks it into is the folder it loads the app from, inside the partner's app store.
    ``refuse(client, message, context, reason)`` sends the error reply before
    :class:`AppNotApprovedError` is raised; the allow-list is re-read on every task.
    """

    def pull(client: Any) -> tuple[Any, Any, Any, Any]:
        message, context, run, fab = original(client)
        digest = fab_sha256(fab.content)
        reason = (_refusal(allow_list, digest, fab.hash_str, run.fab_hash)
                  or _folder_refusal(run, fab.content, digest))
        if reason is None:
            _log("INFO", f"Run {run.run_id}: app sha256 {digest} is approved; loading it.")
            return message, context, run, fab
        text = f"Partner refused run {run.run_id}: {reason}. No code of the app was loaded."
        _log("ERROR", f"{text} Allow-list: {allow_list}")
        refuse(client, message, context, text)
        raise AppNotApprovedError(text)

    return pull


def _log(level: str, text: str) -> None:
    from logging import getLevelName

    from flwr.supercore import log

    log(getLevelName(level), "[fedprofile app guard] %s", text)


def _send_refusal(client: Any, message: Any, context: Any, reason: str) -> None:
    """Reply to the task's message with an error naming the refusal."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode
    from flwr.supernode.runtime import run_clientapp as runner

    runner.push_message(client, Message(Error(code=ErrorCode.INVALID_FAB, reason=reason),
                                        reply_to=message), context)


def install_once(install: Callable[[], Path], digest: str, target: Path) -> Path:
    """The app folder of the FAB ``digest``, unpacked by ``install`` only if not there yet.

    Flower unpacks and re-verifies the whole FAB for every task, then keeps whatever folder
    already has the app's name, version and first 8 hex digits of its digest. Here a folder
    is reused only if its marker names this FAB's full digest; a folder under the same name
    from another FAB is removed and this one unpacked in its place.
    """
    marker = target / INSTALLED_MARKER
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two tasks of one partner never unpack at once
        if marker.is_file() and marker.read_text(encoding="ascii").strip() == digest:
            return target
        if target.exists():
            shutil.rmtree(target)
        installed = install()
        if installed.resolve() != target.resolve():
            raise AppNotApprovedError(f"The FAB was unpacked into {installed}, not into the "
                                      f"folder its run names ({target}).")
        (installed / INSTALLED_MARKER).write_text(digest, encoding="ascii")
        return installed


def _install_guard(allow_list: Path) -> None:
    """Route Flower's ClientApp process through :func:`guard_pull`; fail closed."""
    from flwr.supernode.runtime import run_clientapp as runner

    original = getattr(runner, "pull_task_input", None)
    installer = getattr(runner, "install_from_fab", None)
    if original is None or installer is None:
        raise SystemExit("This Flower version has no pull_task_input/install_from_fab to "
                         "guard; refusing to run any app.")
    approved: dict[str, str] = {}
    pull = guard_pull(original, allow_list, _send_refusal)

    def checked_pull(client: Any) -> tuple[Any, Any, Any, Any]:
        message, context, run, fab = pull(client)
        approved["digest"] = fab_sha256(fab.content)
        approved["dir"] = str(app_folder(run.fab_id, run.fab_version, approved["digest"]))
        return message, context, run, fab

    def checked_install(fab_file: Path | bytes, install_dir: Path | None = None,
                        skip_prompt: bool = False) -> Path:
        digest = approved.get("digest")
        if not isinstance(fab_file, bytes) or fab_sha256(fab_file) != digest:
            raise AppNotApprovedError("Only the FAB approved for this task may be installed.")
        if install_dir is not None or digest is None:
            return installer(fab_file, install_dir=install_dir, skip_prompt=skip_prompt)
        return install_once(lambda: installer(fab_file, skip_prompt=skip_prompt), digest,
                            Path(approved["dir"]))

    runner.pull_task_input = checked_pull
    runner.install_from_fab = checked_install


def run_task(runtime_api_address: str, allow_list: Path, token: str, *,
             insecure: bool = False, root_certificates: Path | None = None,
             parent_pid: int | None = None) -> None:
    """Run the ClientApp task behind ``token`` if its FAB is approved (Flower exits after it)."""
    _install_guard(allow_list)
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    from fedprofile.flower_waits import shorten_pull_backoff

    shorten_pull_backoff()

    certificates = None if root_certificates is None else root_certificates.read_bytes()
    run_clientapp(runtime_api_address=runtime_api_address, token=token, insecure=insecure,
                  certificates=certificates, parent_pid=parent_pid,
                  runtime_dependency_install=False)


def main(argv: list[str] | None = None) -> None:
    """Run one ClientApp task (token in ``$FEDPROFILE_TASK_TOKEN``) if its FAB is approved."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--allow-list", type=Path, required=True)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates", type=Path)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args(argv)
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        raise SystemExit(f"No task token in ${TOKEN_ENV}.")
    run_task(args.runtime_api_address, args.allow_list, token, insecure=args.insecure,
             root_certificates=args.root_certificates, parent_pid=args.parent_pid)


if __name__ == "__main__":
    main()
