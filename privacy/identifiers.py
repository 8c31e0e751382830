"""Normalising e-mail addresses and phone numbers before they are pseudonymised.

One canonical text per identifier (case, dots and plus tags of Gmail addresses, E.164 phone
numbers), so one person gets one pseudonym whatever the spelling; a rejected identifier
raises :class:`InvalidIdentifier` whose message is the reason only, never the identifier.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

from fedprofile.errors import ContractError, DataError

__all__ = ["InvalidIdentifier", "normalize_email", "normalize_phone"]

_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
_EDGE_RE = re.compile(rf"^[\s{_INVISIBLE}]+|[\s{_INVISIBLE}]+$")
_LOCAL_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~.")
_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_PHONE_CHARS_RE = re.compile(r"\+?[\d\s().\-/]+")
_TOO_SHORT, _TOO_LONG = "phone number is too short", "phone number is too long"
_UNKNOWN_CC = "phone number has an unknown country code"
_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: _UNKNOWN_CC,
    NumberParseException.NOT_A_NUMBER: "phone number is not a number",
    NumberParseException.TOO_SHORT_AFTER_IDD: _TOO_SHORT,
    NumberParseException.TOO_SHORT_NSN: _TOO_SHORT,
    NumberParseException.TOO_LONG: _TOO_LONG,
}
_LENGTH_REASONS = {
    ValidationResult.TOO_SHORT: _TOO_SHORT,
    ValidationResult.TOO_LONG: _TOO_LONG,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "phone number lacks an area code",
}
class InvalidIdentifier(DataError):
    """An e-mail address or phone number was rejected; the message is the reason only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise InvalidIdentifier(reason)


def _clean(value: object, what: str, *, lower: bool, spaces: bool) -> str:
    _require(isinstance(value, str), f"{what} is not text")
    text = unicodedata.normalize("NFKC", str(value))
    text = unicodedata.normalize("NFKC", text.lower()) if lower else text
    text = _EDGE_RE.sub("", text)
    _require(bool(text), f"{what} is empty")
    _require(spaces or not any(ch.isspace() for ch in text), f"{what} contains whitespace")
    visible = not any(unicodedata.category(ch).startswith("C") for ch in text)
    _require(visible, f"{what} contains control or invisible characters")
    return text


def _check_parts(local: str, domain: str) -> None:
    _require(bool(local), "e-mail has an empty local part")
    _require(len(local) <= 64, "e-mail local part is longer than 64 characters")
    dots_ok = not (local.startswith(".") or local.endswith(".") or ".." in local)
    _require(dots_ok, "e-mail local part has a leading, trailing or double '.'")
    chars_ok = all(ch.isalnum() or ch in _LOCAL_SPECIALS for ch in local)
    _require(chars_ok, "e-mail local part has a character that is not allowed")
    _require(bool(domain), "e-mail has an empty domain")
    _require("." in domain, "e-mail domain has no '.'")
    for label in domain.split("."):
        _require(bool(label), "e-mail domain has an empty label")
        _require(len(label) <= 63, "e-mail domain label is longer than 63 characters")
        chars_ok = all(ch.isalnum() or ch == "-" for ch in label)
        _require(chars_ok, "e-mail domain has a character that is not allowed")
        hyphen_ok = not (label.startswith("-") or label.endswith("-"))
        _require(hyphen_ok, "e-mail domain label starts or ends with '-'")


def normalize_email(value: str) -> str:
    """Return the canonical e-mail address; raise InvalidIdentifier (reason only) if malformed.

    Strips (unicode) whitespace, applies NFKC and lowercases. Only for ``gmail.com`` and
    ``googlemail.com`` are dots and a ``+tag`` dropped from the local part and the domain
    mapped to ``gmail.com``: other providers may treat dots and ``+`` as significant.
    """
    text = _clean(value, "e-mail", lower=True, spaces=False)
    _require("@" in text, "e-mail has no '@'")
    _require(text.count("@") == 1, "e-mail has more than one '@'")
    _require(len(text) <= 254, "e-mail is longer than 254 characters")
    local, _, domain = text.partition("@")
    _check_parts(local, domain)
    if domain in _GMAIL_DOMAINS:
        local, domain = local.partition("+")[0].replace(".", ""), "gmail.com"
        _require(bool(local), "e-mail has an empty local part")
    return f"{local}@{domain}"


def _check_region(region: str) -> str:
    if isinstance(region, str) and region.upper() in phonenumbers.SUPPORTED_REGIONS:
        return region.upper()
    raise ContractError(f"default_region must be a region code such as 'GB', got {region!r}")


def _parse_phone(text: str, region: str) -> tuple[phonenumbers.PhoneNumber | None, str]:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return None, _PARSE_REASONS.get(exc.error_type, "phone number cannot be parsed")
    length = phonenumbers.is_possible_number_with_reason(number)
    if length != ValidationResult.IS_POSSIBLE:
        return None, _LENGTH_REASONS.get(length, "phone number has an impossible length")
    if not phonenumbers.is_valid_number(number):
        return None, "phone number is not a valid number for its country"
    return number, ""


def normalize_phone(value: str, *, default_region: str = "GB") -> str:
    """Return a phone number in E.164 form; raise InvalidIdentifier (reason only) if invalid.

    National numbers are read in ``default_region`` (unknown region: ContractError);
    international ones may start with ``+``, the region's exit code or ``00``. Only
    digits, spaces, ``- . ( ) /`` and a leading ``+`` are accepted.
    """
    region = _check_region(default_region)
    text = re.sub(r"\s+", " ", _clean(value, "phone number", lower=False, spaces=True))
    allowed = _PHONE_CHARS_RE.fullmatch(text) is not None
    _require(allowed, "phone number has characters other than digits, spaces, -.()/ and '+'")
    number, reason = _parse_phone(text, region)
    digits = re.sub(r"\D", "", text)
    if number is None and digits.startswith("00") and not text.startswith("+"):
        number, _ = _parse_phone("+" + digits[2:], region)
    if number is None:
        raise InvalidIdentifier(reason)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
