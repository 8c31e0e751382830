"""Several pseudonym keys addressed by key id, for key rotation.

A pseudonym names the key that made it (``"<key_id>:<hex>"``): :func:`key_id_of` reads that
id back, and a :class:`KeyRing` holds the current key with the older ones, so pseudonyms
made under any of them are recognised while new ones use the current key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from types import MappingProxyType

from fedprofile.errors import DataError
from fedprofile.privacy.keys import PseudonymKey, load_key

__all__ = ["KeyRing", "key_id_of"]

_PSEUDONYM_RE = re.compile(r"(?P<key_id>[A-Za-z0-9][A-Za-z0-9._-]{0,63}):[0-9a-f]{64}")


def key_id_of(pseudonym: str) -> str:
    """Return the id of the key that produced ``pseudonym``.

    Parameters
    ----------
    pseudonym : str
        A pseudonym of the form ``"<key_id>:<64 hex digits>"``.

    Returns
    -------
    str
        The key id part.

    Raises
    ------
    DataError
        If ``pseudonym`` does not have the pseudonym form.
    """
    match = _PSEUDONYM_RE.fullmatch(pseudonym) if isinstance(pseudonym, str) else None
    if match is None:
        raise DataError("not a pseudonym: expected '<key_id>:<64 lowercase hex digits>'")
    return match.group("key_id")


class KeyRing:
    """Several keys addressed by key id, for key rotation.

    Parameters
    ----------
    keys : iterable of PseudonymKey
        The keys; ids must be unique.
    current : str, optional
        Id of the key used for new pseudonyms; by default the newest key
        (latest ``created_at``, the last one given on ties).
    """

    def __init__(self, keys: Iterable[PseudonymKey], *, current: str | None = None) -> None:
        by_id: dict[str, PseudonymKey] = {}
        for key in keys:
            if key.key_id in by_id:
                raise DataError(f"key id {key.key_id!r} appears twice in the key ring")
            by_id[key.key_id] = key
        if not by_id:
            raise DataError("a key ring needs at least one key")
        if current is None:
            newest = max(
                enumerate(by_id.values()),
                key=lambda pair: (datetime.fromisoformat(pair[1].created_at), pair[0]),
            )
            current = newest[1].key_id
        elif current not in by_id:
            raise DataError(f"current key id {current!r} is not in the key ring")
        self._keys = MappingProxyType(by_id)
        self._current = current

    @classmethod
    def load(
        cls, paths: Iterable[str | os.PathLike[str]], *, current: str | None = None
    ) -> KeyRing:
        """Load a key ring from key files (see :func:`load_key`)."""
        return cls((load_key(path) for path in paths), current=current)

    @property
    def current(self) -> PseudonymKey:
        """The key used for new pseudonyms."""
        return self._keys[self._current]

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of all keys, in the order given."""
        return tuple(self._keys)

    def get(self, key_id: str) -> PseudonymKey:
        """Return the key with id ``key_id``; raise DataError if unknown."""
        try:
            return self._keys[key_id]
        except KeyError:
            known = ", ".join(self._keys)
            raise DataError(f"no key with id {key_id!r} in the key ring (known: {known})") from None

    def key_for(self, pseudonym: str) -> PseudonymKey:
        """Return the key that produced ``pseudonym``; raise DataError if unknown."""
        return self.get(key_id_of(pseudonym))

    def is_current(self, pseudonym: str) -> bool:
        """Tell whether ``pseudonym`` was made with the current key."""
        return key_id_of(pseudonym) == self._current

    def __contains__(self, key_id: object) -> bool:
        """Tell whether a key with id ``key_id`` is in the ring."""
        return key_id in self._keys

    def __iter__(self) -> Iterator[PseudonymKey]:
        """Iterate over the keys in the order given."""
        return iter(self._keys.values())

    def __len__(self) -> int:
        """Return the number of keys."""
        return len(self._keys)

    def __repr__(self) -> str:
        """Show key ids only, never secrets."""
        return f"KeyRing(key_ids={self.key_ids!r}, current={self._current!r})"
