"""The partner launcher's warm ClientApp processes (``fedprofile.deploy.warm_start``).

Each check runs a small launcher in its own interpreter, as the partner's launcher runs: the
fork server is a process-wide singleton, so it must not be shared with the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from fedprofile.deploy.warm_start import WarmStarter

_LAUNCHER = textwrap.dedent("""
    import json, os, sys
    from fedprofile.deploy import warm_start
    from fedprofile.deploy.warm_start import WarmStarter

    def report(path, launcher_pid):
        # what a task's process starts with
        json.dump({"pid": os.getpid(), "launcher_pid": launcher_pid,
                   "preloaded": sorted(m for m in ("pandas", "fedprofile.client.app")
                                       if m in sys.modules),
                   "launcher_secret": getattr(warm_start, "SECRET", None)},
                  open(path, "w"))

    if __name__ == "__main__":
        warm_start.SECRET = "superexec secret held by the launcher"
        starter = WarmStarter(sys.argv[2].split(","))
        starter.start_server()
        for n in range(2):
            child = starter.start(report, f"{sys.argv[1]}/{n}.json", launcher_pid=os.getpid())
            child.join()
            assert child.exitcode == 0, child.exitcode
""")


def _launch(tmp_path: Path, preload: str, *, extra_path: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "launcher.py"
    script.write_text(_LAUNCHER)
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path),
                                                          env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(script), str(tmp_path), preload],
                          capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)


def test_a_task_starts_with_the_preloads_and_nothing_of_the_launcher(tmp_path: Path) -> None:
    done = _launch(tmp_path, "fedprofile.client.app")
    assert done.returncode == 0, done.stderr[-2000:]

    tasks = [json.loads((tmp_path / f"{n}.json").read_text()) for n in range(2)]
    for task in tasks:
        assert task["preloaded"] == ["fedprofile.client.app", "pandas"]  # imported once
        assert task["pid"] != task["launcher_pid"]
        assert task["launcher_secret"] is None  # a fresh interpreter, not a fork of it
    assert tasks[0]["pid"] != tasks[1]["pid"]  # one process per task, as in Flower


def test_a_preload_that_fails_to_import_stops_the_launcher_by_name(tmp_path: Path) -> None:
    broken = tmp_path / "modules"
    broken.mkdir()
    (broken / "broken_partner_lib.py").write_text("raise RuntimeError('bad install')\n")

    done = _launch(tmp_path, "json,broken_partner_lib", extra_path=broken)

    assert done.returncode != 0
    assert "could not start its warm ClientApp processes" in done.stderr
    assert "broken_partner_lib" in done.stderr


def test_modules_that_are_not_installed_are_not_preloaded() -> None:
    starter = WarmStarter(["json", "no_such_package_here.sub", "fedprofile.client.app"])
    assert starter.preload == ["json", "fedprofile.client.app"]
