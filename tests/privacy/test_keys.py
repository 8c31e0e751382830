"""Tests for pseudonymisation keys: generation, key files, rotation."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import warnings
from pathlib import Path

import pytest

from fedprofile.errors import DataError, PrivacyWarning
from fedprofile.privacy.keyring import KeyRing, key_id_of
from fedprofile.privacy.keys import (
    PseudonymKey,
    generate_key,
    load_key,
    write_key,
)
from fedprofile.privacy.pseudonym import Pseudonymizer


def _secret_forms(key: PseudonymKey) -> list[str]:
    return [
        key.secret.hex(),
        base64.b64encode(key.secret).decode(),
        base64.urlsafe_b64encode(key.secret).decode(),
        repr(key.secret),
    ]


def _write_document(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    path.chmod(0o600)
    return path


def _valid_document(key: PseudonymKey) -> dict[str, str]:
    return {
        "key_id": key.key_id,
        "created_at": key.created_at,
        "secret": base64.b64encode(key.secret).decode(),
    }


def test_generated_key_has_a_32_byte_secret_and_a_random_k_prefixed_id() -> None:
    # Execute
    key = generate_key()

    # Assert
    assert len(key.secret) == 32
    assert re.fullmatch(r"k-[0-9a-f]{12}", key.key_id)
    assert key.key_id[2:] not in key.secret.hex()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", key.created_at)


def test_generated_keys_have_distinct_ids_and_secrets() -> None:
    # Execute
    keys = [generate_key() for _ in range(200)]

    # Assert
    assert len({key.key_id for key in keys}) == len(keys)
    assert len({key.secret for key in keys}) == len(keys)


def test_generate_key_uses_the_given_key_id() -> None:
    # Execute
    key = generate_key(key_id="partner-a.2024_01")

    # Assert
    assert key.key_id == "partner-a.2024_01"


@pytest.mark.parametrize(
    "key_id",
    ["", "a:b", "-leading-dash", "has space", "x" * 65, "é"],
    ids=["empty", "colon", "leading-dash", "space", "too-long", "non-ascii"],
)
def test_generate_key_rejects_a_malformed_key_id(key_id: str) -> None:
    # Execute / Assert
    with pytest.raises(DataError, match="key_id"):
        generate_key(key_id=key_id)


def test_key_rejects_a_secret_that_is_not_32_bytes() -> None:
    # Execute / Assert
    with pytest.raises(DataError, match="32 bytes"):
        PseudonymKey(key_id="k-1", created_at="2024-01-01T00:00:00Z", secret=b"\x01" * 16)


def test_key_rejects_a_created_at_that_is_not_utc() -> None:
    # Execute / Assert
    with pytest.raises(DataError, match="UTC"):
        PseudonymKey(key_id="k-1", created_at="2024-01-01T00:00:00+02:00", secret=b"\x01" * 32)


def test_key_repr_and_str_show_id_and_time_but_never_the_secret() -> None:
    # Prepare
    key = generate_key()

    # Execute
    shown = [repr(key), str(key), f"{key}", f"{key!r}"]

    # Assert
    for text in shown:
        assert key.key_id in text
        assert key.created_at in text
        assert "secret" not in text
        for form in _secret_forms(key):
            assert form not in text


def test_key_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    # Prepare
    key = generate_key()

    # Execute
    path = write_key(key, tmp_path / "partner.key")

    # Assert
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_round_trips(tmp_path: Path) -> None:
    # Prepare
    key = generate_key()
    path = write_key(key, tmp_path / "partner.key")

    # Execute
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_key(path)

    # Assert
    assert loaded == key
    assert loaded.secret == key.secret


def test_write_key_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    # Prepare
    path = write_key(generate_key(), tmp_path / "partner.key")
    before = path.read_bytes()

    # Execute / Assert
    with pytest.raises(DataError, match="already exists") as caught:
        write_key(generate_key(), path)
    assert str(path) in str(caught.value)
    assert "overwrite=True" in str(caught.value)
    assert path.read_bytes() == before


def test_write_key_with_overwrite_replaces_the_file_keeping_mode_0600(tmp_path: Path) -> None:
    # Prepare
    path = write_key(generate_key(), tmp_path / "partner.key")
    path.chmod(0o644)
    replacement = generate_key()

    # Execute
    write_key(replacement, path, overwrite=True)

    # Assert
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == replacement
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partner.key"]


def test_write_key_into_a_missing_directory_names_the_file(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "absent" / "partner.key"

    # Execute / Assert
    with pytest.raises(DataError, match="cannot write key file") as caught:
        write_key(generate_key(), path)
    assert str(path) in str(caught.value)


def test_key_file_holds_the_secret_only_as_base64_with_its_id(tmp_path: Path) -> None:
    # Prepare
    key = generate_key()

    # Execute
    document = json.loads(write_key(key, tmp_path / "partner.key").read_text())

    # Assert
    assert document["key_id"] == key.key_id
    assert document["created_at"] == key.created_at
    assert base64.b64decode(document["secret"]) == key.secret


def test_load_key_of_a_missing_file_names_the_file(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "nowhere.key"

    # Execute / Assert
    with pytest.raises(DataError, match="does not exist") as caught:
        load_key(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not valid JSON"),
        (b"key_id = 'k-1'\n", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[1, 2, 3]", "JSON object"),
    ],
    ids=["empty", "not-json", "binary", "json-list"],
)
def test_load_key_of_a_corrupt_file_names_the_file(
    tmp_path: Path, payload: bytes, reason: str
) -> None:
    # Prepare
    path = tmp_path / "corrupt.key"
    path.write_bytes(payload)
    path.chmod(0o600)

    # Execute / Assert
    with pytest.raises(DataError, match=reason) as caught:
        load_key(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("missing", ["key_id", "created_at", "secret"])
def test_load_key_names_a_missing_field(tmp_path: Path, missing: str) -> None:
    # Prepare
    document = _valid_document(generate_key())
    del document[missing]
    path = _write_document(tmp_path / "partial.key", document)

    # Execute / Assert
    with pytest.raises(DataError, match=f"lacks field.*{missing}") as caught:
        load_key(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("secret", base64.b64encode(b"\x07" * 16).decode(), "32 bytes, found 16"),
        ("secret", base64.b64encode(b"\x07" * 33).decode(), "32 bytes, found 33"),
        ("secret", "not base64 at all!", "not valid base64"),
        ("secret", 12345, "base64 string"),
        ("key_id", "a:b", "key_id"),
        ("created_at", "yesterday", "created_at"),
        ("format", "other/format", "format"),
    ],
    ids=[
        "short-secret",
        "long-secret",
        "bad-base64",
        "secret-number",
        "bad-id",
        "bad-time",
        "bad-format",
    ],
)
def test_load_key_rejects_invalid_fields_without_showing_the_secret(
    tmp_path: Path, field: str, value: object, reason: str
) -> None:
    # Prepare
    key = generate_key()
    document: dict[str, object] = dict(_valid_document(key))
    document[field] = value
    path = _write_document(tmp_path / "bad.key", document)

    # Execute / Assert
    with pytest.raises(DataError, match=reason) as caught:
        load_key(path)
    message = str(caught.value)
    assert str(path) in message
    for form in _secret_forms(key):
        assert form not in message
    if field == "secret" and isinstance(value, str):
        assert value not in message


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666], ids=["group", "other", "world-rw"])
def test_load_key_warns_when_the_file_is_accessible_to_others(tmp_path: Path, mode: int) -> None:
    # Prepare
    path = write_key(generate_key(), tmp_path / "shared.key")
    path.chmod(mode)

    # Execute / Assert
    with pytest.warns(PrivacyWarning, match="chmod 600"):
        load_key(path)


def test_key_id_of_returns_the_id_of_the_key_that_made_a_pseudonym() -> None:
    # Prepare
    key = generate_key(key_id="partner-a.v2")
    pseudonym = Pseudonymizer(key).email("someone@example.com")

    # Execute
    key_id = key_id_of(pseudonym)

    # Assert
    assert key_id == "partner-a.v2"


@pytest.mark.parametrize(
    "text",
    ["", "k-1", "k-1:", "k-1:abc", "k-1:" + "A" * 64, ":" + "a" * 64, "a:b:" + "a" * 64],
    ids=["empty", "no-colon", "no-digest", "short-digest", "upper-hex", "no-id", "two-colons"],
)
def test_key_id_of_rejects_text_that_is_not_a_pseudonym(text: str) -> None:
    # Execute / Assert
    with pytest.raises(DataError, match="not a pseudonym"):
        key_id_of(text)


def _key(key_id: str, created_at: str) -> PseudonymKey:
    return PseudonymKey(key_id=key_id, created_at=created_at, secret=os.urandom(32))


def test_key_ring_current_is_the_newest_key() -> None:
    # Prepare
    old = _key("k-old", "2023-01-01T00:00:00Z")
    new = _key("k-new", "2024-06-01T00:00:00Z")

    # Execute
    ring = KeyRing([new, old])

    # Assert
    assert ring.current == new
    assert ring.key_ids == ("k-new", "k-old")
    assert len(ring) == 2
    assert "k-old" in ring


def test_key_ring_recognises_pseudonyms_made_under_a_rotated_out_key(tmp_path: Path) -> None:
    # Prepare
    old = _key("k-old", "2023-01-01T00:00:00Z")
    new = _key("k-new", "2024-06-01T00:00:00Z")
    paths = [write_key(old, tmp_path / "old.key"), write_key(new, tmp_path / "new.key")]
    stale = Pseudonymizer(old).phone("07911 123456")

    # Execute
    ring = KeyRing.load(paths)

    # Assert
    assert ring.key_for(stale) == old
    assert not ring.is_current(stale)
    assert ring.is_current(Pseudonymizer(ring.current).phone("07911 123456"))
    assert ring.get("k-new") == new


def test_key_ring_accepts_an_explicit_current_key() -> None:
    # Prepare
    keys = [_key("k-a", "2023-01-01T00:00:00Z"), _key("k-b", "2024-01-01T00:00:00Z")]

    # Execute
    ring = KeyRing(keys, current="k-a")

    # Assert
    assert ring.current.key_id == "k-a"


@pytest.mark.parametrize(
    ("keys", "current", "reason"),
    [
        ([], None, "at least one key"),
        (["k-a", "k-a"], None, "appears twice"),
        (["k-a"], "k-z", "not in the key ring"),
    ],
    ids=["empty", "duplicate-id", "unknown-current"],
)
def test_key_ring_rejects_an_inconsistent_set_of_keys(
    keys: list[str], current: str | None, reason: str
) -> None:
    # Prepare
    made = [_key(key_id, "2024-01-01T00:00:00Z") for key_id in keys]

    # Execute / Assert
    with pytest.raises(DataError, match=reason):
        KeyRing(made, current=current)


def test_key_ring_get_of_an_unknown_id_lists_the_known_ids() -> None:
    # Prepare
    ring = KeyRing([_key("k-a", "2024-01-01T00:00:00Z")])

    # Execute / Assert
    with pytest.raises(DataError, match=r"k-zzz.*known: k-a"):
        ring.get("k-zzz")


def test_key_ring_repr_shows_ids_but_no_secrets() -> None:
    # Prepare
    key = _key("k-a", "2024-01-01T00:00:00Z")

    # Execute
    text = repr(KeyRing([key]))

    # Assert
    assert "k-a" in text
    for form in _secret_forms(key):
        assert form not in text
