"""Build hook: map the role folders into the one import package of the wheel.

The repository keeps ``server/``, ``client/``, ``privacy/``, ``sim/`` and ``deploy/`` at its
top level, where they show the architecture; the wheel ships them as ``fedprofile.server``
and so on. An editable install maps nothing: its import hook exposes the checkout's
``fedprofile/`` only (``dev-mode-exact``), whose ``__init__.py`` extends the package's path
to the role folders.
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ROLES = ("server", "client", "privacy", "sim", "deploy")


class RoleFoldersHook(BuildHookInterface):
    """Force-include each role folder as a subpackage of ``fedprofile`` in built wheels."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Add the mapping for a standard wheel; leave editable wheels alone."""
        if self.target_name == "wheel" and version != "editable":
            for role in ROLES:
                build_data["force_include"][role] = f"fedprofile/{role}"
