"""What a partner approves: the SHA-256 of a FAB, built from source or read from a file.

``flwr build`` and ``flwr run`` build a FAB deterministically (sorted files, fixed zip
dates), so a partner who reviews the app's source at a given version gets the very digest
the coordinator's ``flwr run`` will ship; an edited app gets another digest and is refused.
"""

from __future__ import annotations

from pathlib import Path

from fedprofile.deploy.app_guard import add_to_allow_list, fab_sha256
from fedprofile.errors import ContractError

__all__ = ["app_digest", "approve_app"]


def app_digest(source: Path) -> str:
    """SHA-256 of the FAB ``flwr run SOURCE`` would ship (SOURCE: app folder or ``.fab``)."""
    source = Path(source)
    if source.is_file():
        return fab_sha256(source.read_bytes())
    if not (source / "pyproject.toml").is_file():
        raise ContractError(f"The app source {source} is neither a .fab file nor a folder "
                            "with a pyproject.toml.")
    from flwr.cli.build import build_fab_from_disk

    try:
        return fab_sha256(build_fab_from_disk(source))
    except (ValueError, OSError) as exc:
        raise ContractError(f"The app in {source} cannot be built into a FAB: {exc}") from None


def approve_app(source: Path, allow_list: Path | None = None) -> tuple[str, bool]:
    """The app's digest, added to ``allow_list`` when given; the flag says if it was new."""
    digest = app_digest(source)
    if allow_list is None:
        return digest, False
    try:
        return digest, add_to_allow_list(allow_list, digest, note=Path(source).name)
    except (OSError, ValueError) as exc:
        raise ContractError(f"The allow-list {allow_list} cannot be updated: {exc}") from None
