"""Response targets and design matrices: scaling by public bounds, hold-out, predictors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedprofile.client.response import gram_statistics, upper_triangle
from fedprofile.contract.assignment import assign
from fedprofile.contract.design import (
    design_data,
    design_names,
    design_norm_bound,
    feature_mask,
    target_bound,
)
from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import load_spec, parse_spec
from fedprofile.contract.spec import FeatureSpec
from fedprofile.contract.targets import TARGET_BOUND, holdout_mask, target_vector, unscale_target
from fedprofile.errors import ContractError, DataError
from fedprofile.presets.datasets import load_preset

L101 = math.log(101.0)  # log1p of the spend bound 100

TOY: dict[str, Any] = {
    "features": {
        "age": {"kind": "numeric", "bounds": [20, 60]},
        "color": {"kind": "categorical", "categories": ["red", "blue"]},
    },
    "target": {
        "spend": {"kind": "numeric", "bounds": [0, 100]},
        "spend_log": {"kind": "numeric", "bounds": [0, 100], "transform": "log1p",
                      "column": "spend"},
        "bought": {"kind": "binary", "positive": "yes"},
        "clicked": {"kind": "binary", "positive": 1},
        "future_age": {"kind": "numeric", "bounds": [0, 100], "column": "age"},
    },
}


def _toy_spec() -> FeatureSpec:
    return parse_spec(TOY, source="toy.toml")


def _toy_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "age": [30, 40, None, 50],
        "color": ["red", "blue", "red", "green"],
        "spend": [50, None, 10, 200],
        "bought": ["yes", "no", "no", "yes"],
        "clicked": [1, 0, 0, 1],
    })


@pytest.fixture(scope="module")
def bank() -> tuple[FeatureSpec, pd.DataFrame]:
    preset = load_preset("bank")
    return load_spec(preset.spec_path), preset.frame.iloc[:3000].reset_index(drop=True)


# --- target_vector ----------------------------------------------------------------------------


def test_numeric_target_is_clipped_transformed_and_scaled_by_hand() -> None:
    # Prepare
    spec = _toy_spec()
    frame = pd.DataFrame({"spend": [9, 200, -5, None, "abc", 0, 100]})

    # Execute
    y, valid = target_vector(frame, spec.targets["spend_log"])

    # Assert: log1p(clip(v, 0, 100)) / ln(101) - 1/2; invalid rows are flagged
    expected = [math.log(10.0) / L101 - 0.5, 0.5, -0.5, None, None, -0.5, 0.5]
    assert valid.tolist() == [True, True, True, False, False, True, True]
    np.testing.assert_allclose(y[valid], [e for e in expected if e is not None], rtol=0,
                               atol=1e-15)
    assert np.all(np.abs(y) <= TARGET_BOUND)


def test_numeric_target_without_transform_is_linear_by_hand() -> None:
    # Execute
    y, valid = target_vector(pd.DataFrame({"spend": [0.0, 25.0, 50.0, 150.0]}),
                             _toy_spec().targets["spend"])

    # Assert
    np.testing.assert_allclose(y, [-0.5, -0.25, 0.0, 0.5], rtol=0, atol=1e-15)
    assert valid.all()


def test_unscale_target_inverts_the_scaling() -> None:
    # Prepare
    target = _toy_spec().targets["spend_log"]
    y, _ = target_vector(pd.DataFrame({"spend": [0.0, 9.0, 100.0]}), target)

    # Execute / Assert
    np.testing.assert_allclose(unscale_target(y, target), [0.0, 9.0, 100.0], rtol=1e-12,
                               atol=1e-12)


def test_unscale_target_refuses_a_binary_target() -> None:
    with pytest.raises(ContractError, match="binary"):
        unscale_target(np.zeros(2), _toy_spec().targets["bought"])


def test_binary_target_with_a_string_positive_by_hand() -> None:
    # Prepare: text labels compare without case or surrounding spaces ("YES", " yes" match)
    frame = pd.DataFrame({"bought": ["yes", "no", None, "YES", "maybe"]})

    # Execute
    y, valid = target_vector(frame, _toy_spec().targets["bought"])

    # Assert
    assert y.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert valid.tolist() == [True, True, False, True, True]


@pytest.mark.parametrize("values", [[1, 0, 0, 1], [1.0, 0.0, 0.0, 1.0], ["1", "0", "0", "1"]],
                         ids=["int", "float", "text"])
def test_binary_target_with_an_int_positive_by_hand(values) -> None:
    # Execute
    y, valid = target_vector(pd.DataFrame({"clicked": values}), _toy_spec().targets["clicked"])

    # Assert
    assert y.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert valid.all()


def test_binary_target_with_missing_values_flags_them() -> None:
    # Execute
    y, valid = target_vector(pd.DataFrame({"clicked": [1.0, np.nan, 0.0]}),
                             _toy_spec().targets["clicked"])

    # Assert
    assert y.tolist() == [1.0, 0.0, 0.0]
    assert valid.tolist() == [True, False, True]


def test_target_column_can_be_mapped() -> None:
    # Execute
    y, _ = target_vector(pd.DataFrame({"subscribed": ["no", "yes"]}),
                         _toy_spec().targets["bought"], mapping={"bought": "subscribed"})

    # Assert
    assert y.tolist() == [0.0, 1.0]


@pytest.mark.parametrize(("target", "frame", "match"), [
    ("bought", pd.DataFrame({"other": [1]}), "missing target column 'bought'"),
    ("spend_log", pd.DataFrame({"other": [1]}), "missing target column 'spend'"),
    ("spend", pd.DataFrame({"spend": ["a", "b", None]}), "column 'spend' holds no numeric"),
    ("bought", pd.DataFrame({"bought": [None, None]}), "target 'bought' has no values"),
], ids=["missing-column", "missing-declared-column", "non-numeric", "binary-without-values"])
def test_target_vector_errors_name_the_column(target, frame, match) -> None:
    with pytest.raises(DataError, match=match) as info:
        target_vector(frame, _toy_spec().targets[target], source="partner.csv")
    assert str(info.value).startswith("partner.csv:")


# --- holdout_mask -----------------------------------------------------------------------------


def test_holdout_mask_is_deterministic_and_seeded() -> None:
    # Execute
    first = holdout_mask(1000, fraction=0.2, seed=0)
    again = holdout_mask(1000, fraction=0.2, seed=0)
    other = holdout_mask(1000, fraction=0.2, seed=1)

    # Assert
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9])
def test_holdout_mask_holds_out_about_the_fraction(fraction) -> None:
    # Execute
    mask = holdout_mask(100_000, fraction=fraction, seed=3)

    # Assert: 5 binomial standard deviations are below 0.01
    assert mask.dtype == bool and mask.shape == (100_000,)
    assert abs(mask.mean() - fraction) < 0.01


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")],
                         ids=["negative", "one", "above-one", "nan"])
def test_holdout_mask_rejects_an_invalid_fraction(fraction) -> None:
    with pytest.raises(ContractError, match="'holdout'"):
        holdout_mask(10, fraction=fraction, seed=0)


# --- design_data by hand on a toy table -------------------------------------------------------


def test_toy_design_by_hand_drops_rows_without_features_or_target() -> None:
    # Prepare: row 1 has no spend, row 2 no age (dropped), row 3 is "other" and clipped
    spec = _toy_spec()

    # Execute
    data = design_data(_toy_frame(), spec, "spend", segment_centers=None, holdout=0.0, seed=0)

    # Assert: Z = [age, color=red, color=blue, color=(other), 1]
    np.testing.assert_allclose(data.z_train, [[-0.25, 1, 0, 0, 1], [0.25, 0, 0, 1, 1]],
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(data.y_train, [0.0, 0.5], rtol=0, atol=1e-15)
    assert data.z_test.shape == (0, 5) and data.y_test.shape == (0,)


def test_a_target_read_from_a_feature_column_excludes_that_feature() -> None:
    # Prepare: future_age reads the "age" column, so "age" is not a predictor
    spec = _toy_spec()

    # Execute
    data = design_data(_toy_frame(), spec, "future_age", segment_centers=None, holdout=0.0,
                       seed=0)

    # Assert
    assert feature_mask(spec, "future_age").tolist() == [False, True, True, True]
    assert design_names(spec, "future_age", 0) == [
        "color=red", "color=blue", "color=(other)", "intercept"]
    np.testing.assert_allclose(data.z_train, [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]],
                               rtol=0, atol=0)
    np.testing.assert_allclose(data.y_train, [-0.2, -0.1, 0.0], rtol=0, atol=1e-15)


def test_bank_balance_target_drops_the_balance_feature(bank) -> None:
    # Prepare
    spec, frame = bank

    # Execute
    data = design_data(frame, spec, "balance", segment_centers=None, holdout=0.2, seed=0)
    names = design_names(spec, "balance", 0)

    # Assert
    assert "balance" not in names
    assert names == [n for n in spec.slot_names if n != "balance"] + ["intercept"]
    assert data.z_train.shape[1] == spec.dim == len(names)
    matrix = transform_frame(frame, spec).matrix
    expected = np.hstack([np.delete(matrix, spec.slices()["balance"], axis=1),
                          np.ones((len(matrix), 1))])
    test = holdout_mask(len(matrix), fraction=0.2, seed=0)
    np.testing.assert_array_equal(data.z_train, expected[~test])
    np.testing.assert_array_equal(data.z_test, expected[test])


def test_bank_y_target_keeps_every_feature_and_ends_with_the_intercept(bank) -> None:
    # Prepare
    spec, frame = bank

    # Execute
    data = design_data(frame, spec, "y", segment_centers=None, holdout=0.2, seed=0)

    # Assert
    assert design_names(spec, "y", 0) == [*spec.slot_names, "intercept"]
    np.testing.assert_array_equal(data.z_train[:, -1], 1.0)
    np.testing.assert_array_equal(data.z_test[:, -1], 1.0)
    assert set(np.unique(data.y_train)) == {0.0, 1.0}
    assert len(data.z_train) + len(data.z_test) == len(frame)
    assert 0.15 < len(data.z_test) / len(frame) < 0.25


def test_segment_aware_design_adds_one_hot_columns_of_the_nearest_centre(bank) -> None:
    # Prepare
    spec, frame = bank
    matrix = transform_frame(frame, spec).matrix
    centers = matrix[[0, 10, 20, 30]]

    # Execute
    data = design_data(frame, spec, "y", segment_centers=centers, holdout=0.0, seed=0)

    # Assert
    segment = data.z_train[:, spec.dim:spec.dim + 4]
    assert data.z_train.shape[1] == spec.dim + 4 + 1
    assert design_names(spec, "y", 4)[spec.dim:] == [
        "segment=0", "segment=1", "segment=2", "segment=3", "intercept"]
    np.testing.assert_array_equal(segment.sum(axis=1), 1.0)
    np.testing.assert_array_equal(segment.argmax(axis=1), assign(matrix, centers))


@pytest.mark.parametrize(("target", "segment_aware", "squared"), [
    ("y", False, 7.0), ("balance", False, 6.75), ("y", True, 8.0), ("balance", True, 7.75),
], ids=["y", "balance", "y-segments", "balance-segments"])
def test_design_norm_bound_by_hand_bounds_every_row(bank, target, segment_aware,
                                                    squared) -> None:
    # Prepare: 5 numerics (1/4 each), 4 categoricals of weight 1, 3 flags of weight 1/2 (1/4
    # each), the intercept, the segment slot; the balance target drops one numeric
    spec, frame = bank
    centers = transform_frame(frame, spec).matrix[:5] if segment_aware else None

    # Execute
    bound = design_norm_bound(spec, target, segment_aware=segment_aware)
    data = design_data(frame, spec, target, segment_centers=centers, holdout=0.2, seed=0)

    # Assert
    assert bound == pytest.approx(math.sqrt(squared), rel=1e-15)
    rows = np.vstack([data.z_train, data.z_test])
    assert np.linalg.norm(rows, axis=1).max() <= bound


def test_target_bound_is_half_for_numeric_and_one_for_binary(bank) -> None:
    spec, _ = bank
    assert (target_bound(spec, "balance"), target_bound(spec, "y")) == (0.5, 1.0)


def test_design_data_rejects_an_undeclared_target(bank) -> None:
    spec, frame = bank
    with pytest.raises(ContractError, match="'duration' is not declared"):
        design_data(frame, spec, "duration", segment_centers=None, holdout=0.2, seed=0)


def test_design_data_without_target_values_raises_data_error(bank) -> None:
    # Prepare
    spec, frame = bank
    small = frame.iloc[:20].copy()
    small["y"] = None

    # Execute / Assert
    with pytest.raises(DataError, match="target 'y' has no values"):
        design_data(small, spec, "y", segment_centers=None, holdout=0.2, seed=0)


def test_design_data_with_every_customer_held_out_raises_data_error(bank) -> None:
    # Prepare
    spec, frame = bank
    small = frame.iloc[:20]
    assert holdout_mask(20, fraction=0.999999, seed=0).all()

    # Execute / Assert
    with pytest.raises(DataError, match="left for training"):
        design_data(small, spec, "y", segment_centers=None, holdout=0.999999, seed=0)


def test_partition_without_positives_still_releases_its_statistics(bank) -> None:
    # Prepare: a partner whose customers all answered "no". The target is valid (binary
    # targets do not need both classes at one partner: the federation pools them), so the
    # partner's design is built and its Gram and Z'y (= 0) are well defined.
    spec, frame = bank
    negatives = frame.loc[frame["y"] == "no"].iloc[:500]
    data = design_data(negatives, spec, "y", segment_centers=None, holdout=0.2, seed=0)

    # Execute
    upper, xty = gram_statistics(data.z_train, data.y_train)

    # Assert
    assert np.all(data.y_train == 0.0) and len(data.y_train) > 0
    np.testing.assert_array_equal(xty, 0.0)
    np.testing.assert_allclose(upper, upper_triangle(data.z_train.T @ data.z_train),
                               rtol=1e-12, atol=1e-9)
