"""Tests for the feature contract: parsing, spec errors, norm bound, fingerprint, box."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedprofile.contract.data_quality import MIN_CUSTOMERS_CHECKED
from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import load_spec, parse_spec
from fedprofile.contract.spec import OTHER, CategoricalFeature, FeatureSpec, NumericFeature
from fedprofile.errors import ContractError
from fedprofile.resources import CONTRACTS, packaged_dir

SPECS = packaged_dir(CONTRACTS)

# A tiny spec whose norm bound is easy by hand:
#   a: numeric, weight 2 -> contributes (2/2)**2 = 1
#   b: numeric, weight 4 -> contributes (4/2)**2 = 4
#   c: categorical, weight 2 -> contributes 2**2 = 4
# norm_bound = sqrt(1 + 4 + 4) = 3
TINY: dict[str, Any] = {
    "federation": {"name": "tiny", "description": "hand-checked"},
    "features": {
        "a": {"kind": "numeric", "bounds": [0, 10], "weight": 2.0},
        "b": {"kind": "numeric", "bounds": [0, 1000], "transform": "log1p", "weight": 4.0},
        "c": {"kind": "categorical", "categories": ["x", "y"], "weight": 2.0},
    },
}


def _tiny() -> FeatureSpec:
    return parse_spec(copy.deepcopy(TINY), source="tiny.toml")


def _write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped specs -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "dim", "norm_sq", "targets"), [
    ("bank", 41, 6.0, {"y", "balance"}),
    ("retail", 7, 1.75, {"future_spend", "future_purchase"}),
    ("hillstrom", 13, 2.875, {"spend", "visit", "conversion"}),
], ids=["bank", "retail", "hillstrom"])
def test_shipped_specs_parse_with_hand_counted_dimensions(name: str, dim: int, norm_sq: float,
                                                          targets: set[str]) -> None:
    # Execute
    spec = load_spec(SPECS / f"{name}.toml")

    # Assert
    assert spec.name == name
    assert spec.dim == dim
    assert len(spec.slot_names) == dim
    assert spec.norm_bound == pytest.approx(math.sqrt(norm_sq), rel=1e-15)
    assert set(spec.targets) == targets
    assert spec.source == str(SPECS / f"{name}.toml")


def test_bank_spec_declares_features_as_written() -> None:
    # Execute
    spec = load_spec(SPECS / "bank.toml")

    # Assert
    balance = spec.feature("balance")
    assert isinstance(balance, NumericFeature)
    assert balance.bounds == (-10000.0, 100000.0)
    assert balance.transform == "signed_log1p"
    job = spec.feature("job")
    assert isinstance(job, CategoricalFeature)
    assert job.levels[-1] == OTHER
    assert (job.missing, job.default) == ("impute", "unknown")
    assert spec.feature("loan").weight == 0.5
    assert spec.targets["y"].kind == "binary"
    assert spec.targets["y"].positive == "yes"


def test_unknown_feature_lookup_names_the_spec_and_feature() -> None:
    # Execute / Assert
    with pytest.raises(ContractError, match=r"tiny\.toml has no feature 'zzz'"):
        _tiny().feature("zzz")


# --- spec errors -----------------------------------------------------------------------------

_ERRORS = [
    ('kind = "numeric"\nbounds = [95, 18]', "age", "are they reversed"),
    ('kind = "numeric"\nbounds = [5, 5]', "age", "low < high"),
    ('kind = "ordinal"\nbounds = [0, 1]', "age", "'kind' must be \"numeric\" or \"categorical\""),
    ("bounds = [0, 1]", "age", "'kind' must be"),
    ('kind = "numeric"\nbounds = [0, 1]\nbound = [0, 2]', "age", "unknown key(s) ['bound']"),
    ('kind = "numeric"', "age", "'bounds' must be a list [low, high]"),
    ('kind = "numeric"\nbounds = [0, 1, 2]', "age", "'bounds' must be a list [low, high]"),
    ('kind = "numeric"\nbounds = ["a", 1]', "age", "bounds: must be a finite number"),
    ('kind = "numeric"\nbounds = [0, inf]', "age", "bounds: must be a finite number"),
    ('kind = "numeric"\nbounds = [-1, 10]\ntransform = "log1p"', "age", "lower bound >= 0"),
    ('kind = "numeric"\nbounds = [0, 10]\ntransform = "sqrt"', "age", "'transform' must be"),
    ('kind = "numeric"\nbounds = [0, 10]\nmissing = "impute"', "age",
     "needs a public 'default'"),
    ('kind = "numeric"\nbounds = [0, 10]\nmissing = "zero"', "age", "'missing' must be one of"),
    ('kind = "numeric"\nbounds = [0, 10]\nmissing = "impute"\ndefault = "x"', "age",
     "default: must be a finite number"),
    ('kind = "categorical"\ncategories = ["a", "b", "a"]', "job", "duplicate"),
    ('kind = "categorical"\ncategories = ["1", 1]', "job", "duplicate"),
    ('kind = "categorical"\ncategories = ["a", "b"]\nmissing = "impute"\ndefault = "c"', "job",
     "'default' 'c' is not a declared category"),
    ('kind = "categorical"\ncategories = ["a"]\nother = false\ndefault = "(other)"', "job",
     "is not a declared category"),
    ('kind = "categorical"\ncategories = []', "job", "'categories' must be a non-empty list"),
    ('kind = "categorical"', "job", "'categories' must be a non-empty list"),
    ('kind = "categorical"\ncategories = ["a", "(other)"]', "job", "is reserved"),
    ('kind = "categorical"\ncategories = ["a"]\nother = "yes"', "job", "'other' must be true"),
    ('kind = "categorical"\ncategories = ["a"]\nbounds = [0, 1]', "job",
     "unknown key(s) ['bounds']"),
    ('kind = "numeric"\nbounds = [0, 1]\nweight = 0', "age", "'weight' must be in (0, inf)"),
    ('kind = "numeric"\nbounds = [0, 1]\nweight = -2.0', "age", "'weight' must be in (0, inf)"),
    ('kind = "numeric"\nbounds = [0, 1]\nweight = "heavy"', "age",
     "weight: must be a finite number"),
    ('kind = "categorical"\ncategories = ["a"]\nweight = nan', "job",
     "weight: must be a finite number"),
    ('kind = "categorical"\ncategories = ["a"]\nweight = true', "job",
     "weight: must be a finite number"),
    ('kind = "numeric"\nbounds = [0, 1]\ncolumn = ""', "age", "'column' must be a non-empty"),
]
_ERROR_IDS = [
    "bounds-reversed", "bounds-equal", "unknown-kind", "no-kind", "unknown-key",
    "missing-bounds", "three-bounds", "text-bound", "infinite-bound", "log1p-negative-low",
    "unknown-transform", "impute-without-default", "unknown-missing-rule", "text-default",
    "duplicate-categories", "duplicate-after-str", "default-not-declared",
    "default-other-without-other-slot", "empty-categories", "no-categories",
    "reserved-other-category", "other-not-bool", "categorical-with-bounds", "weight-zero",
    "weight-negative", "weight-text", "weight-nan", "weight-bool", "empty-column",
]


@pytest.mark.parametrize(("body", "feature", "problem"), _ERRORS, ids=_ERROR_IDS)
def test_spec_error_names_the_feature_and_the_problem(tmp_path: Path, body: str, feature: str,
                                                      problem: str) -> None:
    # Prepare
    path = _write(tmp_path, f"[features.{feature}]\n{body}\n")

    # Execute
    with pytest.raises(ContractError) as info:
        load_spec(path)

    # Assert
    message = str(info.value)
    assert str(path) in message
    assert f"[features.{feature}]" in message
    assert problem in message


@pytest.mark.parametrize(("text", "problem"), [
    ("", r"\[features\]: declare at least one feature"),
    ("[federation]\nname = \"x\"\n", r"\[features\]: declare at least one feature"),
    ("[features]\n", r"\[features\]: declare at least one feature"),
    ("[features.age]\nkind = \"numeric\"\nbounds = [0, 1]\n[extras]\nx = 1\n",
     r"unknown section\(s\) \['extras'\]"),
    ("features = 3\n", r"\[features\]: declare at least one feature"),
    ("[features]\nage = 3\n", r"\[features\.age\]: must be a table"),
], ids=["empty-file", "no-features-section", "empty-features", "unknown-section",
        "features-not-a-table", "feature-not-a-table"])
def test_structural_spec_errors_raise_contract_error(tmp_path: Path, text: str,
                                                     problem: str) -> None:
    # Prepare
    path = _write(tmp_path, text)

    # Execute / Assert
    with pytest.raises(ContractError, match=problem):
        load_spec(path)


@pytest.mark.parametrize(("body", "problem"), [
    ('kind = "binary"', "needs 'positive'"),
    ('kind = "ordinal"', "'kind' must be \"numeric\" or \"binary\""),
    ('kind = "numeric"\nbounds = [10, 0]', "are they reversed"),
    ('kind = "numeric"\nbounds = [-5, 10]\ntransform = "log1p"', "lower bound >= 0"),
], ids=["binary-without-positive", "unknown-kind", "bounds-reversed", "log1p-negative"])
def test_target_errors_name_the_target(tmp_path: Path, body: str, problem: str) -> None:
    # Prepare
    text = f'[features.age]\nkind = "numeric"\nbounds = [0, 1]\n[target.spend]\n{body}\n'
    path = _write(tmp_path, text)

    # Execute / Assert
    with pytest.raises(ContractError, match=re.escape("[target.spend]")) as info:
        load_spec(path)
    assert problem in str(info.value)


def test_non_toml_spec_file_raises_contract_error_naming_it(tmp_path: Path) -> None:
    # Prepare
    path = _write(tmp_path, "features:\n  age: {kind: numeric}\n", name="spec.yaml")

    # Execute / Assert
    with pytest.raises(ContractError, match=r"spec\.yaml.*is not valid TOML"):
        load_spec(path)


def test_binary_spec_file_raises_contract_error_naming_it(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "spec.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")

    # Execute / Assert
    with pytest.raises(ContractError, match=r"spec\.toml.*is not valid TOML"):
        load_spec(path)


@pytest.mark.parametrize("relative", ["absent.toml", "folder"], ids=["missing-file", "a-folder"])
def test_missing_spec_file_raises_contract_error_naming_it(tmp_path: Path,
                                                           relative: str) -> None:
    # Prepare
    (tmp_path / "folder").mkdir()
    path = tmp_path / relative

    # Execute / Assert
    with pytest.raises(ContractError, match=f"{re.escape(relative)}' does not exist"):
        load_spec(path)


# --- norm bound and box ----------------------------------------------------------------------


def test_norm_bound_of_the_tiny_spec_by_hand() -> None:
    # Execute
    spec = _tiny()

    # Assert
    assert spec.norm_bound == 3.0
    assert spec.dim == 5
    assert spec.slot_names == ["a", "b", "c=x", "c=y", f"c={OTHER}"]
    assert spec.slices() == {"a": slice(0, 1), "b": slice(1, 2), "c": slice(2, 5)}


def test_norm_bound_is_attained_by_a_row_at_the_bounds() -> None:
    # Prepare
    spec = _tiny()
    frame = pd.DataFrame({"a": [10.0, 0.0, 50.0], "b": [1000.0, 0.0, -3.0],
                          "c": ["x", "y", "unseen"]})

    # Execute
    matrix = transform_frame(frame, spec).matrix

    # Assert: [1, 2, 2, 0, 0], [-1, -2, 0, 2, 0], [1, -2, 0, 0, 2]
    np.testing.assert_allclose(matrix, [[1, 2, 2, 0, 0], [-1, -2, 0, 2, 0], [1, -2, 0, 0, 2]])
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), [3.0, 3.0, 3.0])


_finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(_finite, _finite, st.sampled_from(["x", "y", "z", " x "])),
                     min_size=1, max_size=MIN_CUSTOMERS_CHECKED - 1))
def test_transformed_rows_never_exceed_the_norm_bound(
        rows: list[tuple[float, float, str]]) -> None:
    # Prepare: fewer rows than the data-quality check judges, so that tables whose every
    # value is clipped (refused from MIN_CUSTOMERS_CHECKED rows on) are transformed too
    spec = _tiny()
    frame = pd.DataFrame(rows, columns=["a", "b", "c"])

    # Execute
    matrix = transform_frame(frame, spec).matrix

    # Assert
    assert np.all(np.linalg.norm(matrix, axis=1) <= spec.norm_bound * (1 + 1e-12))
    lo, hi = spec.box()
    assert np.all((matrix >= lo) & (matrix <= hi))


def test_random_bank_rows_never_exceed_the_norm_bound() -> None:
    # Prepare
    spec = load_spec(SPECS / "bank.toml")
    rng = np.random.default_rng(11)
    n = 5_000
    data: dict[str, Any] = {}
    for f in spec.features:
        if isinstance(f, NumericFeature):
            lo, hi = f.bounds
            span = hi - lo
            data[f.name] = rng.uniform(lo - span, hi + span, size=n)
        else:
            data[f.name] = rng.choice([*f.categories, "never-declared"], size=n)
    frame = pd.DataFrame(data)

    # Execute
    matrix = transform_frame(frame, spec).matrix

    # Assert
    assert matrix.shape == (n, spec.dim)
    norms = np.linalg.norm(matrix, axis=1)
    assert norms.max() <= spec.norm_bound * (1 + 1e-12)
    assert norms.max() > 0.9 * spec.norm_bound  # clipped values get near the bound


def test_box_of_the_tiny_spec_by_hand() -> None:
    # Execute
    lo, hi = _tiny().box()

    # Assert
    assert lo.shape == hi.shape == (5,)
    np.testing.assert_array_equal(lo, [-1.0, -2.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(hi, [1.0, 2.0, 2.0, 2.0, 2.0])


def test_box_of_the_bank_spec_matches_the_weights() -> None:
    # Prepare
    spec = load_spec(SPECS / "bank.toml")

    # Execute
    lo, hi = spec.box()

    # Assert
    assert lo.shape == hi.shape == (spec.dim,)
    slices = spec.slices()
    assert hi[slices["age"]].tolist() == [0.5]
    assert lo[slices["age"]].tolist() == [-0.5]
    assert hi[slices["loan"]].tolist() == [0.5, 0.5, 0.5]
    assert lo[slices["job"]].tolist() == [0.0] * 13
    assert hi[slices["job"]].tolist() == [1.0] * 13


@pytest.mark.parametrize("transform", ["none", "log1p", "signed_log1p"])
def test_numeric_unscale_inverts_scale_inside_the_bounds(transform: str) -> None:
    # Prepare
    feat = NumericFeature(name="v", bounds=(0.0, 500.0), transform=transform,  # type: ignore[arg-type]
                          weight=3.0)
    values = np.array([0.0, 0.5, 7.0, 123.0, 500.0])

    # Execute
    scaled = feat.scale(values)

    # Assert
    assert scaled.min() == pytest.approx(-1.5)
    assert scaled.max() == pytest.approx(1.5)
    np.testing.assert_allclose(feat.unscale(scaled), values, atol=1e-9)


# --- fingerprint -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bank", "retail", "hillstrom"])
def test_fingerprint_is_stable_across_a_dict_round_trip(name: str) -> None:
    # Prepare
    spec = load_spec(SPECS / f"{name}.toml")

    # Execute
    again = parse_spec(spec.to_dict(), source="elsewhere.toml")

    # Assert
    assert again.fingerprint() == spec.fingerprint()
    assert again.to_dict() == spec.to_dict()
    assert again.features == spec.features
    assert again.targets == spec.targets
    assert re.fullmatch(r"[0-9a-f]{64}", spec.fingerprint())


def test_fingerprint_does_not_depend_on_where_the_spec_was_read(tmp_path: Path) -> None:
    # Prepare
    text = (SPECS / "bank.toml").read_text(encoding="utf-8")
    copy_path = _write(tmp_path, text, name="partner-copy.toml")

    # Execute / Assert
    assert load_spec(copy_path).fingerprint() == load_spec(SPECS / "bank.toml").fingerprint()


@pytest.mark.parametrize(("path", "value"), [
    (("features", "a", "bounds"), [0, 11]),
    (("features", "b", "transform"), "signed_log1p"),
    (("features", "a", "weight"), 2.5),
    (("features", "c", "categories"), ["y", "x"]),
    (("features", "c", "other"), False),
], ids=["bound", "transform", "weight", "category-order", "other-slot"])
def test_fingerprint_changes_when_the_contract_changes(path: tuple[str, ...],
                                                       value: object) -> None:
    # Prepare
    data = copy.deepcopy(TINY)
    data[path[0]][path[1]][path[2]] = value

    # Execute
    changed = parse_spec(data)

    # Assert
    assert changed.fingerprint() != _tiny().fingerprint()


def test_fingerprint_changes_when_the_feature_order_changes() -> None:
    # Prepare
    data = copy.deepcopy(TINY)
    data["features"] = dict(reversed(list(data["features"].items())))

    # Execute
    reordered = parse_spec(data)

    # Assert
    assert reordered.slot_names != _tiny().slot_names
    assert reordered.fingerprint() != _tiny().fingerprint()


@pytest.mark.parametrize(("data", "hint"), [
    ({"features": {"a": {"kind": "numeric", "Bounds": [0, 1]}}}, "did you mean 'bounds'?"),
    ({"feature": {}, "features": {"a": {"kind": "numeric", "bounds": [0, 1]}}},
     "did you mean 'features'?"),
    ({"features": {"m": {"kind": "categorical", "categories": ["Jun"], "missing": "impute",
                         "default": "jun"}}}, "did you mean 'Jun'?"),
], ids=["key", "section", "default-category"])
def test_misspelt_contract_names_get_a_close_match(data: dict[str, Any], hint: str) -> None:
    """A misspelt key, section or declared default names the close match (contract text)."""
    with pytest.raises(ContractError, match=re.escape(hint)):
        parse_spec(data)
