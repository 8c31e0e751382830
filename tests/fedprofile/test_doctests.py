"""The docstring examples of the role subpackages, imported under their ``fedprofile`` names.

The role folders (``server/``, ``client/``…) sit at the repository's top level; pytest's own
doctest collection would import them under their bare folder names (``server.kmeans``), a
second copy of each module beside ``fedprofile.server.kmeans``. Collecting them here through
the package keeps one module object per file, as in the wheel. The shared core
(``fedprofile/``) is collected by pytest itself (``testpaths``).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

ROLES = ("server", "client", "privacy", "sim", "deploy")


def _role_modules() -> list[str]:
    names = []
    for role in ROLES:
        package = importlib.import_module(f"fedprofile.{role}")
        names.append(package.__name__)
        names += [info.name for info in pkgutil.walk_packages(package.__path__,
                                                              f"{package.__name__}.")
                  if not info.name.endswith(".__main__")]
    return names


@pytest.mark.parametrize("name", _role_modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
