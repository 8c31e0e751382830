"""The partner's handlers driven with crafted instructions, as a dishonest coordinator would.

Each test plays one attack on the partner's ClientApp steps directly (the code every partner
runs) and checks the partner refuses it *before* anything is charged or released.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict

from fedprofile.client.app import error_for, gram, kmeans, profile, score
from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.errors import ContractError, DataError, PolicyRefusedError, ProtocolError
from fedprofile.io.tables import write_table
from fedprofile.privacy.ledger import Ledger
from fedprofile.protocol import (
    ErrorCode,
    GramRequest,
    KMeansRequest,
    ProfileRequest,
    ResponseTask,
    ScoreRequest,
)
from fedprofile.server.kmeans import plan_kmeans
from fedprofile.server.regression import plan_response

DELTA = 1e-6
POLICY_KMEANS_ONLY = """\
max_epsilon_per_run = 1.0
total_epsilon = 4.0
allowed_stages = ["profile", "kmeans"]
"""


@pytest.fixture(scope="module")
def bank_slice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from fedprofile.presets.datasets import load_preset

    bank = load_preset("bank")
    folder = tmp_path_factory.mktemp("bank")
    return write_table(bank.frame.iloc[:600], folder / "customers.csv"), Path(bank.spec_path)


def _site(tmp_path: Path, bank_slice: tuple[Path, Path], policy: str | None = None,
          **config: object) -> PartnerSite:
    data, spec = bank_slice
    policy_path = ""
    if policy is not None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        policy_path = str(tmp_path / "policy.toml")
        Path(policy_path).write_text(policy, encoding="utf-8")
    return PartnerSite(NodeConfig(data_path=str(data), spec=str(spec), partner_name="acme",
                                  state_dir=str(tmp_path / "state"), policy=policy_path,
                                  output_dir=str(tmp_path / "outputs"), **config))  # type: ignore[arg-type]


def _announce(site: PartnerSite, *, epsilon: float = 1.0, stages: tuple[str, ...] = ("kmeans",),
              run_id: str = "run1") -> ProfileRequest:
    events = plan_kmeans(epsilon=epsilon, delta=DELTA, lloyd_rounds=3,
                         norm_bound=site.spec.norm_bound).events()
    request = ProfileRequest(run_id=run_id, spec_fingerprint=site.spec.fingerprint(),
                             epsilon_target=epsilon, delta=DELTA, stages=stages,
                             planned_events=events, min_segment_size=50, k=4)
    profile(request, site)
    return request


def _kmeans_request(site: PartnerSite, request: ProfileRequest, *, index: int = 2,
                    centers: np.ndarray | None = None) -> KMeansRequest:
    """The k-means instruction of the plan's ``index``-th release (its sums)."""
    sums, counts = request.planned_events[index], request.planned_events[index + 1]
    rng = np.random.default_rng(index)
    if centers is None:
        centers = rng.uniform(-0.1, 0.1, size=(4, site.spec.dim))
    return KMeansRequest(run_id=request.run_id, spec_fingerprint=site.spec.fingerprint(),
                         stage=sums.stage, round=sums.round, centers=centers,
                         sum_noise_multiplier=sums.noise_multiplier,
                         count_noise_multiplier=counts.noise_multiplier)


def _releases(site: PartnerSite) -> list:
    with Ledger(site.state_dir / "ledger.sqlite") as book:
        return book.events()


# --- no policy file: the documented default, never "allow everything" -------------------------


def test_a_deployed_partner_without_a_policy_refuses_a_non_private_run(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    site = _site(tmp_path, bank_slice)
    with pytest.raises(PolicyRefusedError, match="non-private"):
        _announce(site, epsilon=math.inf)
    assert site.policy.max_epsilon_per_run == 1.0


def test_a_deployed_partner_without_a_policy_refuses_noise_multiplier_zero(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    # Prepare: an accepted epsilon-1 run, then exact sums requested for its round
    site = _site(tmp_path, bank_slice)
    request = _announce(site)
    exact = replace(_kmeans_request(site, request), sum_noise_multiplier=0.0,
                    count_noise_multiplier=0.0)

    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match="non-private"):
        kmeans(exact, site)
    assert _releases(site) == []


def test_a_deployed_partner_without_a_policy_refuses_a_run_over_the_default_cap(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    site = _site(tmp_path, bank_slice)
    with pytest.raises(PolicyRefusedError, match="above its limit of 1 per run"):
        _announce(site, epsilon=2.0)


# --- the policy binds to the release, not its label --------------------------------------------


def test_a_release_without_an_announced_run_is_refused(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    # Prepare: an instruction made from another run's plan, never announced here
    site = _site(tmp_path, bank_slice, POLICY_KMEANS_ONLY)
    other = _site(tmp_path / "other", bank_slice, POLICY_KMEANS_ONLY)
    request = _announce(other, run_id="elsewhere")

    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match="never announced"):
        kmeans(_kmeans_request(site, request), site)
    assert _releases(site) == []


def test_a_gram_release_labelled_kmeans_is_charged_to_its_real_stage_and_refused(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    # Prepare: the policy allows k-means only; the run announced k-means
    site = _site(tmp_path, bank_slice, POLICY_KMEANS_ONLY)
    request = _announce(site)
    plan = plan_response(task="logistic", epsilon=1.0, delta=DELTA, norm_bound=1.0,
                         target_bound=0.5)
    task = ResponseTask(run_id=request.run_id, spec_fingerprint=site.spec.fingerprint(),
                        stage="kmeans", round=1, target="y", holdout=0.2, holdout_seed=0,
                        segment_centers=np.zeros((0, site.spec.dim)))
    crafted = GramRequest(task=task, gram_noise_multiplier=plan.gram_z,
                          target_noise_multiplier=0.0, with_target=False)

    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match="stage 'logistic' is not in its allowed"):
        gram(crafted, site)
    assert _releases(site) == []


def test_a_planned_round_is_released_once_so_two_requests_cannot_cancel_noise(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    # Prepare
    site = _site(tmp_path, bank_slice, POLICY_KMEANS_ONLY)
    request = _announce(site)
    first = _kmeans_request(site, request)
    kmeans(first, site)

    # Execute: the same round again with other centres (a differencing attack)
    second = replace(first, centers=first.centers + 0.01)

    # Assert
    with pytest.raises(PolicyRefusedError, match="already made"):
        kmeans(second, site)
    assert len(_releases(site)) == 2


def test_a_release_weaker_than_planned_is_refused(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    site = _site(tmp_path, bank_slice, POLICY_KMEANS_ONLY)
    request = _announce(site)
    weaker = _kmeans_request(site, request)
    weaker = replace(weaker, sum_noise_multiplier=weaker.sum_noise_multiplier / 10)
    with pytest.raises(PolicyRefusedError, match="not in the run's announced plan"):
        kmeans(weaker, site)
    assert _releases(site) == []


@pytest.mark.parametrize("share", [0.25, 1.5])
def test_a_round_clips_to_its_radius_and_never_above_the_announced_bound(
        tmp_path: Path, bank_slice: tuple[Path, Path], share: float) -> None:
    site = _site(tmp_path, bank_slice, POLICY_KMEANS_ONLY)
    request = replace(_kmeans_request(site, _announce(site)),
                      radius=share * site.spec.norm_bound)
    if share > 1:  # a looser clip than the announced B: refused, nothing recorded
        with pytest.raises(PolicyRefusedError, match="not in the run's announced plan"):
            kmeans(request, site)
        assert _releases(site) == []
        return
    reply = kmeans(request, site)
    sums = next(e for e in _releases(site) if e.component == "sums")
    assert sums.sensitivity == pytest.approx(request.radius)
    assert sums.noise_multiplier == pytest.approx(request.sum_noise_multiplier)
    assert reply.events[0] == sums


# --- validate and bound before charging --------------------------------------------------------


def test_too_many_centres_are_refused_before_anything_is_charged(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    site = _site(tmp_path, bank_slice, POLICY_KMEANS_ONLY)
    request = _announce(site)
    huge = _kmeans_request(site, request, centers=np.zeros((50_000, site.spec.dim)))
    with pytest.raises(ProtocolError, match="at most 4096"):
        kmeans(huge, site)
    assert _releases(site) == []


# --- noise is never reused ----------------------------------------------------------------


def test_a_deployed_node_refuses_a_noise_seed() -> None:
    with pytest.raises(ContractError, match="simulations only"):
        NodeConfig.from_mapping({"noise-seed": 3, "data-path": "x.csv"})


def test_simulated_seeds_differ_per_request(tmp_path: Path,
                                            bank_slice: tuple[Path, Path]) -> None:
    site = _site(tmp_path, bank_slice, noise_seed=7, simulation=True)
    draw = {name: site.rng(run_id="r", stage="kmeans", round=1, request=np.full(3, x)).normal()
            for name, x in (("a", 0.0), ("a-again", 0.0), ("b", 1e-9))}
    assert draw["a"] == draw["a-again"]
    assert draw["a"] != draw["b"]
    other_run = site.rng(run_id="r2", stage="kmeans", round=1, request=np.zeros(3)).normal()
    assert other_run != draw["a"]


# --- names from the wire never become paths -----------------------------------------------


@pytest.mark.parametrize("run_id", ["../../../tmp/evil", "a/b", "..", "", "x" * 65, "r\x00"])
def test_a_crafted_run_id_is_refused_at_the_boundary(run_id: str) -> None:
    content = ScoreRequest(run_id="ok", spec_fingerprint="f", segment_model="",
                           response_model="").to_record()
    config = dict(content["config"])
    config["run-id"] = run_id
    with pytest.raises(ProtocolError, match="'run-id' must be"):
        ScoreRequest.from_record(RecordDict({"config": ConfigRecord(config)}))


def test_output_files_stay_inside_the_partners_output_folder(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    site = _site(tmp_path, bank_slice)
    assert site.output_path("scores-r1.parquet").parent == Path(site.config.output_dir).resolve()
    for name in ("../x.parquet", "/tmp/x.parquet", "a/../../x.parquet", ".."):
        with pytest.raises(ProtocolError, match="must not be a path"):
            site.output_path(name)


def test_scoring_outside_an_announced_run_is_refused(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    site = _site(tmp_path, bank_slice)
    request = ScoreRequest(run_id="never-announced", spec_fingerprint=site.spec.fingerprint(),
                           segment_model="", response_model="")
    with pytest.raises(PolicyRefusedError, match="never announced"):
        score(request, site)
    assert not Path(site.config.output_dir).exists()


# --- errors tell the coordinator what, not where -------------------------------------------


def test_error_replies_carry_no_local_paths(tmp_path: Path,
                                            bank_slice: tuple[Path, Path]) -> None:
    # Prepare: a partner whose data file is missing, in a folder with a telling name
    secret = tmp_path / "acme-crm-export-2026" / "customers.csv"
    site = PartnerSite(NodeConfig(data_path=str(secret), spec=str(bank_slice[1]),
                                  partner_name="acme", state_dir=str(tmp_path / "state")))
    with pytest.raises(DataError) as info:
        site.matrix()
    assert "acme-crm-export-2026" in str(info.value)  # the partner's own log has it

    # Execute
    reply = error_for(info.value, site, "query.profile")
    bare = error_for(DataError(f"cannot read {secret.parent}/other.csv"), None)

    # Assert
    assert reply.code == ErrorCode.DATA_ERROR
    assert "acme-crm-export-2026" not in reply.reason
    assert str(tmp_path) not in reply.reason
    assert "<data-path>" in reply.reason
    assert "acme-crm-export-2026" not in bare.reason and "<local path>" in bare.reason


def test_a_run_the_partner_cannot_finish_is_refused_at_the_announcement(
        tmp_path: Path, bank_slice: tuple[Path, Path]) -> None:
    # Prepare: a partner whose customers all have y = "no" (one class), asked for logistic y
    import pandas as pd

    from fedprofile.client.checks import NotReadyError

    frame = pd.read_csv(bank_slice[0])
    frame["y"] = "no"
    data = write_table(frame, tmp_path / "one-class.csv")
    site = _site(tmp_path, (data, bank_slice[1]))
    events = plan_response(task="logistic", epsilon=1.0, delta=DELTA, norm_bound=1.0,
                           target_bound=0.5).events()
    request = ProfileRequest(run_id="run1", spec_fingerprint=site.spec.fingerprint(),
                             epsilon_target=1.0, delta=DELTA, stages=("logistic",),
                             planned_events=events, min_segment_size=50, target="y")

    # Execute
    with pytest.raises(NotReadyError) as info:
        profile(request, site)

    # Assert: refused before any release; the reply names the problem, no count or value
    assert _releases(site) == []
    reason = error_for(info.value, site, "query.profile").reason
    assert "'y'" in reason
    assert str(len(frame)) not in reason
