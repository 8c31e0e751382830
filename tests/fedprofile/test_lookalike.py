"""Lookalike building blocks: the seed audience, its design rows, messages and policy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedprofile.config import RunConfig
from fedprofile.contract.lookalike import (
    SeedAudience,
    lookalike_design,
    lookalike_names,
    lookalike_norm_bound,
    read_seed_file,
    seed_labels,
)
from fedprofile.contract.parser import load_spec
from fedprofile.errors import ContractError, DataError, ProtocolError
from fedprofile.models.lookalike_model import LookalikeModel, select_audience
from fedprofile.privacy.policy import load_policy
from fedprofile.protocol import LookalikeRequest, ProfileRequest, ResponseTask
from fedprofile.server.regression import plan_response

BANK = load_spec("bank")
SEED = SeedAudience(partner="acme", expr='y == "yes"')


def _table() -> pd.DataFrame:
    return pd.DataFrame({"age": [30, 40, 50, 60], "balance": [0, 10, 100, 1000],
                         "job": ["admin.", "student", "retired", "unknown"],
                         "marital": ["single"] * 4, "education": ["primary"] * 4,
                         "default": ["no"] * 4, "housing": ["yes", "no", "yes", "no"],
                         "loan": ["no"] * 4, "campaign": [1, 2, 3, 4], "pdays": [-1] * 4,
                         "previous": [0] * 4, "poutcome": ["unknown"] * 4,
                         "y": ["yes", "no", "Yes", "no"],
                         "pid": ["p1", "p2", "p3", "p4"]})


def test_seed_definitions_select_the_owners_customers() -> None:
    table = _table()
    assert seed_labels(table, SEED).tolist() == [True, False, False, False]
    assert seed_labels(table, SeedAudience(partner="acme", column="y")).tolist() == \
        [True, False, True, False]
    by_file = SeedAudience(partner="acme", file=True)
    assert seed_labels(table, by_file, members={"p2", "p4"}).tolist() == \
        [False, True, False, True]


@pytest.mark.parametrize(("seed", "message"), [
    (SeedAudience(partner="acme", column="converted"), "seed column 'converted' does not"),
    (SeedAudience(partner="acme", expr='yy == "yes"'), "that do not exist (did you mean 'y'"),
    (SeedAudience(partner="acme", expr="1 == 1"), "is a constant"),
])
def test_a_seed_that_does_not_exist_is_refused_by_name(seed: SeedAudience, message: str
                                                       ) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        seed_labels(_table(), seed)


def test_unknown_pseudonyms_in_a_seed_file_are_counted_never_named() -> None:
    with pytest.raises(DataError) as info:
        seed_labels(_table(), SeedAudience(partner="acme", file=True),
                    members={"p1", "zz-secret-1", "zz-secret-2"})
    assert "2 of the 3 pseudonyms" in str(info.value)
    assert "zz-secret" not in str(info.value)


def test_seed_file_reads_a_pid_column_or_a_bare_list(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("pid,other\np1,x\np2,y\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("p1\np3\n", encoding="utf-8")
    assert read_seed_file(tmp_path / "a.csv") == {"p1", "p2"}
    assert read_seed_file(tmp_path / "b.csv") == {"p1", "p3"}
    with pytest.raises(DataError, match="does not exist"):
        read_seed_file(tmp_path / "missing.csv")


def test_seed_needs_exactly_one_definition_and_a_partner() -> None:
    with pytest.raises(ContractError, match="exactly one"):
        SeedAudience(partner="acme", column="y", expr='y == "yes"')
    with pytest.raises(ContractError, match="seed partner"):
        SeedAudience(partner="", column="y")
    with pytest.raises(ContractError, match="exactly one"):
        RunConfig.from_mapping({"task": "lookalike", "seed-partner": "acme"})


def test_design_leaves_out_features_the_seed_rule_reads() -> None:
    by_job = SeedAudience(partner="acme", expr='job == "student"')
    assert not any(n.startswith("job=") for n in lookalike_names(BANK, by_job))
    assert any(n.startswith("job=") for n in lookalike_names(BANK, SEED))
    assert lookalike_norm_bound(BANK, by_job) < lookalike_norm_bound(BANK, SEED)
    data = lookalike_design(_table(), BANK, SEED, seed_labels(_table(), SEED), holdout=0.0,
                            holdout_seed=0)
    assert data.z_train.shape == (4, len(lookalike_names(BANK, SEED)))
    assert data.y_train.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert np.linalg.norm(data.z_train, axis=1).max() <= lookalike_norm_bound(BANK, SEED)
    others = lookalike_design(_table(), BANK, SEED, None, holdout=0.0, holdout_seed=0)
    assert others.y_train.sum() == 0


def test_audience_excludes_the_seed_and_holds_ids_and_scores_only() -> None:
    coef = np.zeros(len(lookalike_names(BANK, SEED)))
    coef[lookalike_names(BANK, SEED).index("age")] = 5.0
    model = LookalikeModel(spec=BANK, seed=SEED, coef=coef, penalty=1.0, privacy={},
                           params={}, partners=["acme"])
    table = _table()
    out = select_audience(table, model, size=2, threshold=0.0,
                          exclude=np.array([False, False, False, True]))
    assert list(out.columns) == ["pid", "score", "rank"]
    assert out["pid"].tolist() == ["p3", "p2"]  # oldest first, the seed member p4 left out
    assert LookalikeModel.from_dict(model.to_dict()).seed == SEED


def test_messages_carry_the_seed_definition_only() -> None:
    task = ResponseTask(run_id="r1", spec_fingerprint="f", stage="lookalike", round=0,
                        target="", holdout=0.2, holdout_seed=0,
                        segment_centers=np.zeros((0,)), seed=SEED)
    from fedprofile.protocol import GramRequest

    request = GramRequest(task=task, gram_noise_multiplier=1.0, target_noise_multiplier=0.0,
                          with_target=False)
    assert GramRequest.from_record(request.to_record()).task.seed == SEED
    profile = ProfileRequest(run_id="r1", spec_fingerprint="f", epsilon_target=1.0,
                             delta=1e-6, stages=("lookalike",), planned_events=(),
                             min_segment_size=0, seed=SEED)
    assert ProfileRequest.from_record(profile.to_record()).seed == SEED
    select = LookalikeRequest(run_id="r1", spec_fingerprint="f", model="{}", seed=SEED,
                              size=10, threshold=0.0)
    assert LookalikeRequest.from_record(select.to_record()) == select
    bad = LookalikeRequest(run_id="r1", spec_fingerprint="f", model="{}", seed=SEED, size=0,
                           threshold=0.0)
    with pytest.raises(ProtocolError, match="size >= 1 or a threshold"):
        LookalikeRequest.from_record(bad.to_record())


def test_plan_charges_the_lookalike_stage_and_policy_can_forbid_it(tmp_path: Path) -> None:
    plan = plan_response(task="logistic", epsilon=1.0, delta=1e-6, norm_bound=2.0,
                         target_bound=1.0, rounds=3, stage="lookalike")
    assert {e.stage for e in plan.events()} == {"lookalike"}
    assert [e.component for e in plan.events()] == ["gram", "gradient", "gradient",
                                                    "gradient"]
    path = tmp_path / "policy.toml"
    path.write_text('allowed_stages = ["profile", "logistic"]\nmin_seed_size = 500\n',
                    encoding="utf-8")
    policy = load_policy(path)
    assert "lookalike" not in policy.allowed_stages and policy.min_seed_size == 500
    assert math.isclose(load_policy(path).max_epsilon_per_run, 1.0)
