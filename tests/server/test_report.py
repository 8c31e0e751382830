"""Tests of the static HTML segmentation report."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest

from fedprofile.server.report import render_report

_IMG = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")
_EVIL = "<b>x</b>"


def _profile(seg: int, size: float, share: float, age: float, tags: list[str]) -> dict:
    return {
        "segment": seg, "size": size, "share": share, "suppressed": False,
        "numeric": {"age": age, "balance": 1500.0 + seg, _EVIL: 0.5},
        "categorical": {"job": {"admin.": 0.6, "blue-collar": 0.1, "other": 0.3}},
        "tags": tags,
    }


def _model() -> dict[str, Any]:
    feature_names = ["age", "balance", _EVIL, "job=admin.", "job=blue-collar", "job=other"]
    profiles = [
        _profile(0, 1200.4, 0.13, 52.3, ["older", "high balance"]),
        _profile(1, 8000.2, 0.62, 35.1, ["younger", "mostly blue-collar"]),
        _profile(2, 3000.7, 0.24, 44.0, ["mid-age", "mostly admin."]),
        {
            "segment": 3, "size": 20.1, "share": 0.0016, "suppressed": True,
            "numeric": {"age": 98765.4321},
            "categorical": {"job": {"zz-secret-category": 0.77}},
            "tags": ["zz-hidden-tag"],
        },
    ]
    releases = [
        {"stage": "kmeans-init", "round": 0, "component": "sums", "mechanism": "gaussian",
         "sensitivity": 1.9, "sigma": 30.1, "noise_multiplier": 15.8, "mu": 0.063,
         "epsilon_cumulative": 0.21},
        {"stage": "kmeans", "round": 1, "component": "counts", "mechanism": "gaussian",
         "sensitivity": 1.0, "sigma": 12.0, "noise_multiplier": 12.0, "mu": 0.083,
         "epsilon_cumulative": 0.55},
        {"stage": "kmeans", "round": 2, "component": "sums", "mechanism": "gaussian",
         "sensitivity": 1.9, "sigma": 20.0, "noise_multiplier": 10.5, "mu": 0.095,
         "epsilon_cumulative": 0.9999},
    ]
    return {
        "format": "fedprofile.segment_model", "version": 1,
        "created_at": "2026-11-22T07:00:00+00:00", "federation": "bank", "k": 4,
        "feature_names": feature_names,
        "centers_scaled": [[-0.1, 0.2, 0.3, 0.5, 0.0, 0.0], [0.4, -0.3, 0.1, 0.1, 0.8, 0.1],
                           [0.0, 0.1, -0.2, 0.7, 0.1, 0.2], [0.9, 0.9, 0.9, 0.0, 0.0, 1.0]],
        "sizes_noisy": [1200.4, 8000.2, 3000.7, 20.1],
        "min_segment_size": 50,
        "suppressed": [False, False, False, True],
        "profiles": profiles,
        "spec": {"features": {
            "age": {"kind": "numeric", "bounds": [18, 95]},
            "balance": {"kind": "numeric", "bounds": [-8000, 100000]},
            _EVIL: {"kind": "numeric", "bounds": [0, 1]},
            "job": {"kind": "categorical", "categories": ["admin.", "blue-collar"], "other": True},
        }},
        "privacy": {"epsilon_target": 1.0, "delta": 1e-06, "epsilon_spent": 0.9999, "mu": 0.21,
                    "accountant": "gdp-exact", "non_private": False,
                    "noise_placement": "partner", "unit": "customer (add/remove)",
                    "releases": releases},
        "params": {"k": 4, "rounds": 2, "init": "overcluster", "candidates": 200, "seed": 0},
        "partners": ["blue-collar", "management", "technician+admin.", "services+retired",
                     "rest"],
        "history": [],
    }


def _metrics() -> dict[str, Any]:
    return {
        "kmeans": {"cost_federated": 1234.5, "cost_centralized": 1210.0,
                   "cost_centralized_mean": 1215.0, "cost_ratio": 1.0203, "ari": 0.93,
                   "cost_per_round": [{"round": 0, "cost": 2000.0}, {"round": 1, "cost": 1300.0},
                                      {"round": 2, "cost": 1234.5}]},
        "privacy": {"epsilon_spent": 0.9999, "delta": 1e-06, "non_private": False},
        "n_partners": 5, "n_customers": 45211, "rounds": 2, "wall_time_s": 12.3,
        "evaluation": "simulation",
    }


@pytest.fixture
def model() -> dict[str, Any]:
    return _model()


@pytest.fixture
def metrics() -> dict[str, Any]:
    return _metrics()


@pytest.fixture(scope="module")
def report_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _render(_model(), _metrics(), tmp_path_factory.mktemp("report"))


def _render(model: dict, metrics: dict, tmp_path: Path) -> str:
    out = render_report(model, metrics, tmp_path / "sub" / "report.html")
    assert out.is_file()
    return out.read_text(encoding="utf-8")


def test_report_is_written_and_self_contained(report_text):
    text = report_text
    assert text.startswith("<!DOCTYPE html>")
    for forbidden in ("http://", "https://", "<script src", "<link"):
        assert forbidden not in text
    assert len(_IMG.findall(text)) >= 3


def test_summary_and_quality_in_plain_words(report_text):
    text = report_text
    assert "3 audience segments were learned from 5 partners" in text
    assert "privacy guarantee ε=1.00, δ=1e-6" in text
    assert "within 2.0 % of the cost of a non-private k-means" in text
    assert "NOT PRIVATE" not in text


def test_published_segments_named_and_suppressed_hidden(report_text):
    text = report_text
    for prof in _model()["profiles"][:3]:
        for tag in prof["tags"]:
            assert tag in text
    assert "≈ 8,000" in text
    assert "suppressed (fewer than 50 customers)" in text
    visible = _IMG.sub("", text)
    for secret in ("98765", "98,765", "zz-secret-category", "zz-hidden-tag", "20.1"):
        assert secret not in visible


def test_html_in_names_is_escaped(model, metrics, tmp_path):
    model["federation"] = "<i>bank</i>"
    text = _render(model, metrics, tmp_path)
    assert _EVIL not in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text
    assert "&lt;i&gt;bank&lt;/i&gt;" in text


def test_non_private_run_is_flagged(model, metrics, tmp_path):
    model["privacy"].update(non_private=True, epsilon_spent=math.inf, epsilon_target=math.inf)
    for rel in model["privacy"]["releases"]:
        rel.update(sigma=0.0, noise_multiplier=0.0, mu=math.inf, epsilon_cumulative=math.inf)
    metrics["privacy"]["non_private"] = True
    text = _render(model, metrics, tmp_path).lower()
    assert "not private: this run used ε = ∞ (no noise); for checks only." in text
    assert "private guarantee" not in text
    assert "privacy guarantee" not in text


def test_missing_metrics_do_not_crash(model, tmp_path):
    deployment = {"privacy": {"epsilon_spent": 0.9999}, "n_partners": 5,
                  "evaluation": "deployment", "kmeans": {"cost_federated": 1234.5}}
    text = _render(model, deployment, tmp_path)
    assert "not available in deployment" in text
    assert len(_IMG.findall(text)) >= 3
    assert "not available in deployment" in _render(model, {}, tmp_path)


def test_minimal_model_does_not_crash(tmp_path):
    text = _render({"k": 2, "sizes_noisy": [10.0, 20.0]}, {}, tmp_path)
    assert "Segment 1" in text
    no_privacy = {"federation": "x", "profiles": [{"segment": 0, "tags": ["a"]}],
                  "spec": None, "privacy": None}
    assert "Segment 0" in _render(copy.deepcopy(no_privacy), {}, tmp_path)


def test_data_quality_and_warnings_are_shown(model, metrics, tmp_path):
    # Prepare: per-partner counts as the simulation reads them, and a warning
    metrics["data_quality"] = {
        "acme": {"rows": 1000, "customers": 900, "dropped": 100, "missing": 100,
                 "unparseable": 7, "clipped": 60, "other_category": 0},
        "<b>evil</b>": {"rows": 50, "customers": 50, "dropped": 0, "missing": 0,
                        "unparseable": 0, "clipped": 0, "other_category": 3}}
    metrics["warnings"] = ["68 of 100 segments suppressed (noisy size under the minimum)"]
    # Execute
    text = _render(model, metrics, tmp_path)
    # Assert
    assert "Data quality at each partner" in text
    assert "<td>acme</td>" in text and ">unparseable<" in text and ">(other)<" in text
    assert "&lt;b&gt;evil&lt;/b&gt;" in text and "<b>evil</b>" not in text
    assert "68 of 100 segments suppressed" in text


def test_response_report_keeps_unsupported_slots_out_of_the_effects_chart(tmp_path):
    import numpy as np

    from fedprofile.contract.parser import parse_spec
    from fedprofile.models.response_model import ResponseModel
    from fedprofile.server.report_response import render_response_report

    # Prepare: job=(other) is held by no customer and has the largest coefficient
    spec = parse_spec({
        "federation": {"name": "shop"},
        "features": {"x": {"kind": "numeric", "bounds": [0, 1]},
                     "job": {"kind": "categorical", "categories": ["a"], "other": True}},
        "target": {"spend": {"kind": "numeric", "bounds": [0, 100]}}}, source="s.toml")
    params = {"alpha": 1.0, "unsupported_columns": ["job=(other)"]}
    model = ResponseModel(task="ridge", spec=spec, target="spend",
                          coef=np.array([0.2, 0.1, 1.15, 0.0]), penalty=1.0,
                          privacy={"epsilon_spent": 1.0, "delta": 1e-6}, params=params,
                          partners=["p1", "p2"])
    metrics = {"response": {"n_test": 10, "federated": {"r2": 0.5, "rmse": 0.1},
                            "centralized": {"r2": 0.5, "rmse": 0.1}}}
    # Execute
    text = render_response_report(model, metrics, tmp_path / "r.html").read_text()
    # Assert: marked in the table, named as not charted, metrics said to be scaled
    assert "job=(other) (no customer)" in text
    assert "Not charted: job=(other)" in text
    assert "R² (on the scaled target)" in text
    assert [c["supported"] for c in model.coefficients()] == [True, True, False, True]
