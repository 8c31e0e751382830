"""Tests for identifier normalisation, keyed pseudonyms and file pseudonymisation."""

from __future__ import annotations

import base64
import gzip
import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedprofile.errors import ContractError, DataError
from fedprofile.privacy.keys import PseudonymKey, generate_key
from fedprofile.privacy.pseudonym import (
    EMAIL_TAG,
    PHONE_TAG,
    InvalidIdentifier,
    Pseudonymizer,
    PseudonymizeReport,
    hmac_sha256,
    normalize_email,
    normalize_phone,
    pseudonymize_frame,
)
from fedprofile.privacy.pseudonym_files import pseudonymize_file

FIXED_KEY = PseudonymKey(
    key_id="k-test", created_at="2024-01-01T00:00:00Z", secret=bytes(range(32))
)


@pytest.fixture
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(FIXED_KEY)


# --- e-mail normalisation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  alice@example.com\t\n", "alice@example.com"),
        ("\u00a0alice@example.com\u00a0", "alice@example.com"),
        ("\u2003\u3000alice@example.com\u2009", "alice@example.com"),
        ("\ufeff\u200balice@example.com\u200b", "alice@example.com"),
        ("Alice@EXAMPLE.Com", "alice@example.com"),
        ("ａｌｉｃｅ＠ｅｘａｍｐｌｅ．ｃｏｍ", "alice@example.com"),
        ("ﬁona@example.com", "fiona@example.com"),
        ("jose\u0301@example.es", "jos\u00e9@example.es"),
        ("J.Doe@gmail.com", "jdoe@gmail.com"),
        ("j.d.o.e+newsletter@Gmail.com", "jdoe@gmail.com"),
        ("J.Doe+x+y@googlemail.com", "jdoe@gmail.com"),
        ("j.doe+news@example.com", "j.doe+news@example.com"),
        ("j.doe@mail.gmail.com", "j.doe@mail.gmail.com"),
        ("o'brien@example.co.uk", "o'brien@example.co.uk"),
        ("user@bücher.de", "user@bücher.de"),
    ],
    ids=[
        "ascii-whitespace",
        "non-breaking-space",
        "unicode-spaces",
        "zero-width-and-bom-at-edges",
        "mixed-case",
        "fullwidth-nfkc",
        "ligature-nfkc",
        "combining-accent-nfkc",
        "gmail-dots",
        "gmail-dots-and-tag",
        "googlemail-maps-to-gmail",
        "other-domain-keeps-dots-and-tag",
        "gmail-subdomain-is-other-domain",
        "apostrophe",
        "unicode-domain",
    ],
)
def test_normalize_email_gives_the_canonical_form(raw: str, expected: str) -> None:
    # Execute
    normalised = normalize_email(raw)

    # Assert
    assert normalised == expected


MALFORMED_EMAILS = [
    ("alice.example.com", "e-mail has no '@'"),
    ("alice@home@example.com", "e-mail has more than one '@'"),
    ("@example.com", "e-mail has an empty local part"),
    ("alice@", "e-mail has an empty domain"),
    ("alice@localhost", "e-mail domain has no '.'"),
    ("alice smith@example.com", "e-mail contains whitespace"),
    ("alice@exam\u00a0ple.com", "e-mail contains whitespace"),
    ("ali\u200bce@example.com", "e-mail contains control or invisible characters"),
    ("alice\x00@example.com", "e-mail contains control or invisible characters"),
    ("", "e-mail is empty"),
    (" \u00a0\t", "e-mail is empty"),
    (".alice@example.com", "e-mail local part has a leading, trailing or double '.'"),
    ("al..ice@example.com", "e-mail local part has a leading, trailing or double '.'"),
    ("ali(ce)@example.com", "e-mail local part has a character that is not allowed"),
    ('"alice"@example.com', "e-mail local part has a character that is not allowed"),
    ("alice@example..com", "e-mail domain has an empty label"),
    ("alice@example.com.", "e-mail domain has an empty label"),
    ("alice@-example.com", "e-mail domain label starts or ends with '-'"),
    ("alice@exam_ple.com", "e-mail domain has a character that is not allowed"),
    ("alice@[192.168.0.1]", "e-mail domain has a character that is not allowed"),
    ("+promo@gmail.com", "e-mail has an empty local part"),
    ("a" * 65 + "@example.com", "e-mail local part is longer than 64 characters"),
    ("a@" + "b" * 64 + ".com", "e-mail domain label is longer than 63 characters"),
    ("a@" + ".".join(["b" * 60] * 5) + ".com", "e-mail is longer than 254 characters"),
]
MALFORMED_EMAIL_IDS = [
    "no-at",
    "two-at",
    "empty-local",
    "empty-domain",
    "domain-without-dot",
    "inner-space",
    "inner-nbsp",
    "zero-width-inside",
    "nul-char",
    "empty",
    "only-whitespace",
    "leading-dot",
    "double-dot",
    "parentheses",
    "quoted-local",
    "double-dot-domain",
    "trailing-dot-domain",
    "hyphen-label",
    "underscore-domain",
    "ip-literal",
    "gmail-only-tag",
    "long-local",
    "long-label",
    "long-address",
]


@pytest.mark.parametrize(("raw", "reason"), MALFORMED_EMAILS, ids=MALFORMED_EMAIL_IDS)
def test_normalize_email_rejects_malformed_addresses_with_the_reason_only(
    raw: str, reason: str
) -> None:
    # Execute / Assert
    with pytest.raises(InvalidIdentifier) as caught:
        normalize_email(raw)
    assert caught.value.reason == reason
    assert str(caught.value) == reason
    assert isinstance(caught.value, DataError)


@pytest.mark.parametrize("raw", [None, 42, b"alice@example.com"], ids=["none", "int", "bytes"])
def test_normalize_email_rejects_values_that_are_not_text(raw: object) -> None:
    # Execute / Assert
    with pytest.raises(InvalidIdentifier, match="e-mail is not text"):
        normalize_email(raw)  # type: ignore[arg-type]


# --- phone normalisation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("07911 123456", "GB", "+447911123456"),
        ("07911-123-456", "GB", "+447911123456"),
        ("(07911) 123 456", "GB", "+447911123456"),
        ("07911\u00a0123456 ", "GB", "+447911123456"),
        ("０７９１１ １２３４５６", "GB", "+447911123456"),
        ("+44 7911 123456", "GB", "+447911123456"),
        ("+44 (0)7911 123456", "GB", "+447911123456"),
        ("0044 7911 123456", "GB", "+447911123456"),
        ("00447911123456", "GB", "+447911123456"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("+1 (201) 555-0123", "GB", "+12015550123"),
        ("(201) 555-0123", "US", "+12015550123"),
        ("201.555.0123", "US", "+12015550123"),
        ("201/555-0123", "US", "+12015550123"),
        ("1 201 555 0123", "US", "+12015550123"),
        ("+1 201 555 0123", "US", "+12015550123"),
        ("011 44 7911 123456", "US", "+447911123456"),
        ("0044 7911 123456", "US", "+447911123456"),
        ("+44 7911 123456", "US", "+447911123456"),
        ("07911 123456", "gb", "+447911123456"),
    ],
    ids=[
        "gb-national-spaces",
        "gb-national-dashes",
        "gb-national-brackets",
        "gb-nbsp",
        "gb-fullwidth-digits",
        "gb-international-plus",
        "gb-international-with-trunk-zero",
        "gb-00-prefix",
        "gb-00-prefix-no-spaces",
        "gb-london-landline",
        "us-number-from-gb-region",
        "us-national-brackets",
        "us-national-dots",
        "us-national-slash",
        "us-national-with-trunk-1",
        "us-international-plus",
        "us-exit-code-011",
        "us-region-00-prefix",
        "gb-number-from-us-region",
        "lowercase-region",
    ],
)
def test_normalize_phone_gives_e164(raw: str, region: str, expected: str) -> None:
    # Execute
    normalised = normalize_phone(raw, default_region=region)

    # Assert
    assert normalised == expected


BAD_CHARS = "phone number has characters other than digits, spaces, -.()/ and '+'"
INVALID_PHONES = [
    ("", "GB", "phone number is empty"),
    ("   ", "GB", "phone number is empty"),
    ("12345", "GB", "phone number lacks an area code"),
    ("555-0123", "US", "phone number lacks an area code"),
    ("+44 7911 1234567890", "GB", "phone number is too long"),
    ("+999 123456789", "GB", "phone number has an unknown country code"),
    ("+44 20 7946 095", "GB", "phone number is not a valid number for its country"),
    ("+1 555 555 5555", "US", "phone number is not a valid number for its country"),
    ("07700 900123", "GB", "phone number is not a valid number for its country"),
    ("()", "GB", "phone number is not a number"),
    ("07911 12345a", "GB", BAD_CHARS),
    ("1-800-FLOWERS", "US", BAD_CHARS),
    ("+44 7911 12345+6", "GB", BAD_CHARS),
    ("07911 123456 ext 9", "GB", BAD_CHARS),
    ("0791\u200b1123456", "GB", "phone number contains control or invisible characters"),
]
INVALID_PHONE_IDS = [
    "empty",
    "blank",
    "local-only",
    "us-local-only",
    "too-long",
    "unknown-country-code",
    "wrong-length-landline",
    "unassigned-us-area-code",
    "ofcom-drama-range",
    "no-digits",
    "letter",
    "vanity-letters",
    "inner-plus",
    "extension",
    "zero-width",
]


@pytest.mark.parametrize(("raw", "region", "reason"), INVALID_PHONES, ids=INVALID_PHONE_IDS)
def test_normalize_phone_rejects_invalid_numbers_with_the_reason_only(
    raw: str, region: str, reason: str
) -> None:
    # Execute / Assert
    with pytest.raises(InvalidIdentifier) as caught:
        normalize_phone(raw, default_region=region)
    assert caught.value.reason == reason
    assert str(caught.value) == reason


@pytest.mark.parametrize("region", ["XX", "", "England"], ids=["unknown", "empty", "name"])
def test_unknown_default_region_is_a_contract_error(region: str) -> None:
    # Execute / Assert
    with pytest.raises(ContractError, match="default_region"):
        normalize_phone("07911 123456", default_region=region)
    with pytest.raises(ContractError, match="default_region"):
        Pseudonymizer(FIXED_KEY, default_region=region)


@pytest.mark.parametrize(
    ("normalize", "raw"),
    [(normalize_email, raw) for raw, _ in MALFORMED_EMAILS if raw.strip()]
    + [(normalize_phone, raw) for raw, _, _ in INVALID_PHONES if raw.strip()],
)
def test_rejection_messages_never_contain_the_rejected_value(normalize, raw: str) -> None:
    # Execute
    with pytest.raises(InvalidIdentifier) as caught:
        normalize(raw)

    # Assert
    message = str(caught.value) + repr(caught.value) + repr(caught.value.args)
    assert raw.strip() not in message
    assert raw.strip().lower() not in message.lower()


# --- HMAC and pseudonyms --------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message", "expected"),
    [
        (
            b"\x0b" * 20,
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            b"\xaa" * 20,
            b"\xdd" * 50,
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        ),
        (
            bytes(range(1, 26)),
            b"\xcd" * 50,
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        ),
        (
            b"\xaa" * 131,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            b"\xaa" * 131,
            b"This is a test using a larger than block-size key and a larger than block-size "
            b"data. The key needs to be hashed before being used by the HMAC algorithm.",
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ],
    ids=[
        "rfc4231-case1",
        "rfc4231-case2",
        "rfc4231-case3",
        "rfc4231-case4",
        "rfc4231-case6",
        "rfc4231-case7",
    ],
)
def test_hmac_sha256_matches_rfc4231_vectors(key: bytes, message: bytes, expected: str) -> None:
    # Execute
    digest = hmac_sha256(key, message)

    # Assert
    assert digest.hex() == expected


def test_pseudonym_is_key_id_and_tagged_hmac_of_the_normalised_value(
    pseudonymizer: Pseudonymizer,
) -> None:
    # Prepare
    secret = FIXED_KEY.secret
    email_digest = hmac_sha256(secret, EMAIL_TAG + b"jdoe@gmail.com").hex()
    phone_digest = hmac_sha256(secret, PHONE_TAG + b"+447911123456").hex()

    # Execute
    by_email = pseudonymizer.email("J.Doe@googlemail.com")
    by_phone = pseudonymizer.phone("07911 123456")

    # Assert
    assert by_email == f"k-test:{email_digest}"
    assert by_phone == f"k-test:{phone_digest}"


@pytest.mark.parametrize(
    ("kind", "spellings"),
    [
        ("email", ["J.Doe@GoogleMail.com", " jdoe@gmail.com\u00a0", "j.d.o.e+shop@gmail.com"]),
        ("email", ["Alice@Example.org", "alice@example.org ", "ＡＬＩＣＥ@example.org"]),
        ("phone", ["07911 123456", "+44 7911 123456", "0044-7911-123-456", "(07911) 123456"]),
    ],
    ids=["gmail-variants", "case-and-width-variants", "phone-variants"],
)
def test_pseudonyms_agree_for_one_person_written_differently(
    pseudonymizer: Pseudonymizer, kind: str, spellings: list[str]
) -> None:
    # Execute
    pseudonyms = {getattr(pseudonymizer, kind)(spelling) for spelling in spellings}

    # Assert
    assert len(pseudonyms) == 1


def test_pseudonyms_differ_under_different_keys() -> None:
    # Prepare
    first, second = Pseudonymizer(generate_key()), Pseudonymizer(generate_key())

    # Execute
    emails = first.email("alice@example.com"), second.email("alice@example.com")
    phones = first.phone("07911 123456"), second.phone("07911 123456")

    # Assert
    assert emails[0].split(":")[1] != emails[1].split(":")[1]
    assert phones[0].split(":")[1] != phones[1].split(":")[1]


def test_pseudonyms_differ_between_email_and_phone_domains_for_one_string() -> None:
    # Prepare
    secret = FIXED_KEY.secret
    value = b"+447911123456"

    # Execute
    as_email = hmac_sha256(secret, EMAIL_TAG + value)
    as_phone = hmac_sha256(secret, PHONE_TAG + value)

    # Assert
    assert as_email != as_phone
    assert Pseudonymizer(FIXED_KEY).phone("+447911123456") == f"k-test:{as_phone.hex()}"


def test_pseudonym_is_not_a_plain_sha256_of_the_value(pseudonymizer: Pseudonymizer) -> None:
    # Prepare
    raw, normalised = "J.Doe@GoogleMail.com", "jdoe@gmail.com"
    plain = {
        hashlib.sha256(text.encode()).hexdigest() for text in (raw, normalised, raw.strip().lower())
    } | {hashlib.sha256(EMAIL_TAG + normalised.encode()).hexdigest()}

    # Execute
    digest = pseudonymizer.email(raw).split(":", 1)[1]

    # Assert
    assert digest not in plain


def test_reprs_hold_no_secret_bytes(pseudonymizer: Pseudonymizer) -> None:
    # Prepare
    secret = FIXED_KEY.secret
    forms = [
        secret.hex(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        repr(secret),
    ]

    # Execute
    shown = [repr(pseudonymizer), str(pseudonymizer), repr(FIXED_KEY), str(FIXED_KEY)]

    # Assert
    assert repr(pseudonymizer) == "Pseudonymizer(key_id='k-test', default_region='GB')"
    for text in shown:
        for form in forms:
            assert form not in text


def test_pseudonymizer_rejects_a_key_that_is_not_a_pseudonym_key() -> None:
    # Execute / Assert
    with pytest.raises(ContractError, match="PseudonymKey"):
        Pseudonymizer(bytes(32))  # type: ignore[arg-type]


# --- data frames ----------------------------------------------------------------------


def test_pseudonymize_frame_falls_back_to_phone_and_counts_outcomes(
    pseudonymizer: Pseudonymizer,
) -> None:
    # Prepare
    df = pd.DataFrame(
        {
            "email": ["a@example.com", None, "broken", "  ", "b@example.com", "x@y"],
            "phone": ["07911 123456", "07911 123457", "+44 7911 123458", None, "12", None],
            "spend": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )

    # Execute
    out, report = pseudonymize_frame(df, pseudonymizer, email_col="email", phone_col="phone")

    # Assert
    assert list(out.columns) == ["pid", "spend"]
    assert out["pid"].tolist()[:3] == [
        pseudonymizer.email("a@example.com"),
        pseudonymizer.phone("07911 123457"),
        pseudonymizer.phone("+44 7911 123458"),
    ]
    assert out["pid"].isna().tolist() == [False, False, False, True, False, True]
    assert report.to_dict() == {
        "rows": 6,
        "emails_valid": 2,
        "emails_missing": 2,
        "emails_invalid": {"e-mail domain has no '.'": 1, "e-mail has no '@'": 1},
        "phones_valid": 3,
        "phones_missing": 2,
        "phones_invalid": {"phone number is too short": 1},
        "ids_from_phone": 2,
        "rows_without_identifier": 2,
    }
    assert "email" in df.columns


def test_pseudonymize_frame_with_phone_only(pseudonymizer: Pseudonymizer) -> None:
    # Prepare
    df = pd.DataFrame({"tel": ["07911 123456", "nonsense"], "x": [1, 2]})

    # Execute
    out, report = pseudonymize_frame(df, pseudonymizer, phone_col="tel", id_col="person")

    # Assert
    assert list(out.columns) == ["person", "x"]
    assert report.emails_valid == report.emails_missing == 0
    assert report.phones_valid == report.ids_from_phone == 1
    assert report.rows_without_identifier == 1


def test_report_merge_adds_counts_and_reasons() -> None:
    # Prepare
    first = PseudonymizeReport(rows=3, emails_valid=1, emails_invalid={"a": 1, "b": 1})
    second = PseudonymizeReport(rows=2, emails_valid=2, emails_invalid={"b": 2, "c": 1})

    # Execute
    merged = first.merge(second)

    # Assert
    assert merged.rows == 5
    assert merged.emails_valid == 3
    assert merged.emails_invalid == {"a": 1, "b": 3, "c": 1}


# --- files ----------------------------------------------------------------------------


def _people(rows: int = 50) -> pd.DataFrame:
    emails: list[str | None] = []
    for i in range(rows):
        if i % 5 == 0:
            emails.append(None)
        elif i % 7 == 0:
            emails.append(f"user{i}.example.com")
        elif i % 2:
            emails.append(f"User.{i}+Promo@GoogleMail.com")
        else:
            emails.append(f" user{i}@Example.org ")
    phones = [None if i % 10 == 5 else f"07911 123{i:03d}" for i in range(rows)]
    return pd.DataFrame(
        {
            "segment": [f"seg-{i % 3}" for i in range(rows)],
            "email": emails,
            "spend": [f"{i * 1.5:.2f}" for i in range(rows)],
            "mobile": phones,
        }
    )


def _raw_identifiers(df: pd.DataFrame) -> list[str]:
    found: list[str] = []
    for value in df["email"].dropna():
        found.append(value.strip())
        try:
            found.append(normalize_email(value))
        except InvalidIdentifier:
            continue
    for value in df["mobile"].dropna():
        found += [value, value.replace(" ", ""), normalize_phone(value)[1:]]
    return found


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    else:
        df.to_csv(path, index=False)
    return path


def _read(path: Path) -> pd.DataFrame:
    if path.name.endswith(".parquet"):
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    return _as_objects(frame)


def _as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None)


def _plain_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


FORMATS = [
    ("csv", "csv"),
    ("csv", "parquet"),
    ("parquet", "parquet"),
    ("parquet", "csv"),
    ("csv.gz", "csv.gz"),
]
FORMAT_IDS = ["csv-to-csv", "csv-to-parquet", "parquet-to-parquet", "parquet-to-csv", "gzip-csv"]


@pytest.mark.parametrize(("in_suffix", "out_suffix"), FORMATS, ids=FORMAT_IDS)
def test_pseudonymize_file_in_small_chunks_equals_one_chunk(
    tmp_path: Path, pseudonymizer: Pseudonymizer, in_suffix: str, out_suffix: str
) -> None:
    # Prepare
    people = _people()
    source = _write(people, tmp_path / f"people.{in_suffix}")
    chunked, whole = tmp_path / f"chunked.{out_suffix}", tmp_path / f"whole.{out_suffix}"
    progress: list[int] = []
    columns = {"email_col": "email", "phone_col": "mobile"}

    # Execute
    chunked_report = pseudonymize_file(
        source, chunked, pseudonymizer, chunk_rows=7, progress=progress.append, **columns
    )
    whole_report = pseudonymize_file(source, whole, pseudonymizer, chunk_rows=1000, **columns)

    # Assert
    expected, expected_report = pseudonymize_frame(people, pseudonymizer, **columns)
    assert chunked_report == whole_report == expected_report
    assert progress == [7] * 7 + [1]
    pd.testing.assert_frame_equal(_read(chunked), _read(whole))
    result = _read(chunked)
    assert list(result.columns) == ["pid", "segment", "spend"]
    assert result["pid"].tolist() == _as_objects(expected)["pid"].tolist()
    assert result["spend"].tolist() == people["spend"].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [source.name, chunked.name, whole.name]
    )


@pytest.mark.parametrize(("in_suffix", "out_suffix"), FORMATS, ids=FORMAT_IDS)
def test_pseudonymize_file_output_holds_no_raw_identifier(
    tmp_path: Path, pseudonymizer: Pseudonymizer, in_suffix: str, out_suffix: str
) -> None:
    # Prepare
    people = _people()
    source = _write(people, tmp_path / f"people.{in_suffix}")
    target = tmp_path / f"out.{out_suffix}"

    # Execute
    pseudonymize_file(source, target, pseudonymizer, email_col="email", phone_col="mobile")

    # Assert
    data = _plain_bytes(target)
    for identifier in _raw_identifiers(people):
        assert identifier.encode() not in data
        assert identifier.encode().lower() not in data.lower()
    assert b"email" not in data and b"mobile" not in data


def test_pseudonymize_file_report_counts_rows_and_reasons(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    # Prepare
    source = _write(_people(), tmp_path / "people.csv")

    # Execute
    report = pseudonymize_file(
        source, tmp_path / "out.csv", pseudonymizer, email_col="email", phone_col="mobile"
    )

    # Assert
    assert report.rows == 50
    assert report.emails_missing == 10
    assert report.emails_invalid == {"e-mail has no '@'": 6}
    assert report.emails_valid == 34
    assert report.phones_valid == 45
    assert report.ids_from_phone == 11
    assert report.rows_without_identifier == 5


def test_pseudonymize_file_of_a_header_only_csv_writes_the_header(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    # Prepare
    source = tmp_path / "empty.csv"
    source.write_text("email,spend\n")

    # Execute
    report = pseudonymize_file(source, tmp_path / "out.csv", pseudonymizer, email_col="email")

    # Assert
    assert report.rows == 0
    assert (tmp_path / "out.csv").read_text().strip() == "pid,spend"


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _bad_csv(tmp_path: Path) -> Path:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"email,spend\n" + b"a@example.com,1\n" * 20 + b"b@example.com,2,3,4\n")
    return path


@pytest.mark.parametrize(
    ("setup", "kwargs", "fragments"),
    [
        (lambda d: d / "absent.csv", {"email_col": "email"}, ["absent.csv", "does not exist"]),
        (
            lambda d: _write(_people(), d / "people.xlsx"),
            {"email_col": "email"},
            ["people.xlsx", "suffix"],
        ),
        (
            lambda d: _write(_people(), d / "people.csv"),
            {"email_col": "e_mail"},
            ["people.csv", "'e_mail'", "email_col", "not found"],
        ),
        (
            lambda d: _write(_people(), d / "people.csv"),
            {"phone_col": "phone"},
            ["people.csv", "'phone'", "phone_col"],
        ),
        (
            lambda d: _write(_people(), d / "people.csv"),
            {},
            ["people.csv", "email_col and/or phone_col"],
        ),
        (
            lambda d: _write(_people(), d / "people.csv"),
            {"email_col": "email", "id_col": "spend"},
            ["people.csv", "'spend'", "already exists"],
        ),
        (
            lambda d: _write_bytes(d / "junk.parquet", b"PAR1 not really parquet"),
            {"email_col": "email"},
            ["junk.parquet", "cannot read"],
        ),
        (
            lambda d: _write_bytes(d / "latin.csv", b"email\n\xe9\xff@example.com\n"),
            {"email_col": "email"},
            ["latin.csv", "cannot read"],
        ),
        (
            lambda d: _write_bytes(d / "blank.csv", b""),
            {"email_col": "email"},
            ["blank.csv", "cannot read"],
        ),
        (_bad_csv, {"email_col": "email"}, ["bad.csv", "cannot read"]),
    ],
    ids=[
        "missing-file",
        "unsupported-suffix",
        "missing-email-column",
        "missing-phone-column",
        "no-identity-column",
        "id-column-clash",
        "corrupt-parquet",
        "not-utf8",
        "empty-file",
        "ragged-csv",
    ],
)
def test_pseudonymize_file_bad_input_is_a_data_error_naming_the_problem(
    tmp_path: Path, pseudonymizer: Pseudonymizer, setup, kwargs, fragments: list[str]
) -> None:
    # Prepare
    source = setup(tmp_path)
    target = tmp_path / "out.csv"

    # Execute / Assert
    with pytest.raises(DataError) as caught:
        pseudonymize_file(source, target, pseudonymizer, chunk_rows=5, **kwargs)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize(
    ("out_name", "fragment"),
    [("out.json", "suffix"), ("missing/out.csv", "does not exist"), ("people.csv", "input")],
    ids=["unsupported-suffix", "missing-directory", "same-as-input"],
)
def test_pseudonymize_file_bad_output_path_is_a_data_error(
    tmp_path: Path, pseudonymizer: Pseudonymizer, out_name: str, fragment: str
) -> None:
    # Prepare
    source = _write(_people(), tmp_path / "people.csv")

    # Execute / Assert
    with pytest.raises(DataError, match=fragment):
        pseudonymize_file(source, tmp_path / out_name, pseudonymizer, email_col="email")


def test_pseudonymize_file_rejects_a_non_positive_chunk_size(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    # Prepare
    source = _write(_people(), tmp_path / "people.csv")

    # Execute / Assert
    with pytest.raises(ContractError, match="chunk_rows"):
        pseudonymize_file(source, tmp_path / "o.csv", pseudonymizer, chunk_rows=0, email_col="e")
