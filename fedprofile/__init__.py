"""fedprofile: privacy-first federated profiling on Flower.

One import package. Its subpackages are the architecture: :mod:`fedprofile.server` (the
coordinator), :mod:`fedprofile.client` (the partner node), :mod:`fedprofile.privacy`
(mechanisms, accounting, ledger, policy, pseudonyms), :mod:`fedprofile.sim` (simulation and
benchmarks) and :mod:`fedprofile.deploy` (deployment), over the shared core:
:mod:`fedprofile.contract`, :mod:`fedprofile.protocol`, :mod:`fedprofile.models`,
:mod:`fedprofile.io` and :mod:`fedprofile.cli`.

In the repository the five role folders sit at the top level, beside this package, so the
layout shows the architecture; the wheel maps them inside it (``force-include`` in
``pyproject.toml``). In a source checkout (an editable install, ``flwr run .``) the
package's search path is extended to the repository's top level, so the same names
(``fedprofile.server``…) resolve to the same files everywhere.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("fedprofile")
except PackageNotFoundError:  # imported from a Flower app bundle without an install
    __version__ = "unknown"

_ROLES = ("server", "client", "privacy", "sim", "deploy")
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and all(
        (_CHECKOUT / role / "__init__.py").is_file() for role in _ROLES):
    __path__.append(str(_CHECKOUT))
