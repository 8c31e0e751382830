"""Federated DP k-means on the coordinator: budget plan, private start and Lloyd rounds.

Pure functions (the plan, the candidates; the Lloyd step, the re-clustering and the radius in
:mod:`fedprofile.server.lloyd`) sit apart from the :class:`KMeansStage`, a small stateful
object with a fixed life cycle ``configure(round) -> aggregate(round, replies) -> finalize()``.

Privacy: every round each partner releases its per-centre sums and counts (sensitivity 1),
each with noise at the partner. The start's sums are of customer vectors (sensitivity ``B``,
the contract's norm bound). A private Lloyd round's are of each customer's displacement from
its centre, shortened to a radius ``r <= B`` (sensitivity ``r``, at the planned noise
multiplier: the same privacy loss, proportionally less noise in each centre's step). The
radius is post-processing of the start's released summary: the spread of its candidate
means around the chosen centres, times :data:`RADIUS_SCALE`.

The initialisation is a DP over-clustering round: partners release noised sums and counts for
many *data-independent* candidate centres drawn in the contract's public box; the
coordinator keeps candidates whose noisy count clears twice the noise standard deviation
and runs weighted k-means++ on their noisy means. The first Lloyd round then *refines* that
summary: it runs with ``REFINE_FACTOR * k`` centres placed by the start (cells that follow
the data, where the start's candidates were blind), and the coordinator re-clusters the
cells' noisy means to k. It is an ordinary Lloyd release (each customer in one cell), so it
costs nothing beyond the round's planned budget. No data row is ever sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedprofile.config import InitMethod
from fedprofile.contract.spec import CategoricalFeature, FeatureSpec
from fedprofile.errors import ContractError
from fedprofile.privacy.accounting import gdp_mu, split_mu
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent, PrivacyEvent
from fedprofile.protocol import KMeansReply, KMeansRequest
from fedprofile.server.choose_k import choose_k
from fedprofile.server.lloyd import spread_radius, update_centers, weighted_recluster

__all__ = [
    "REFINE_FACTOR",
    "KMeansPlan",
    "KMeansResult",
    "KMeansStage",
    "RoundPlan",
    "candidate_centers",
    "plan_kmeans",
]

INIT_STAGE, LLOYD_STAGE = "kmeans-init", "kmeans"
PRECISION = 0.05  # largest noise of a candidate mean --k auto uses, as a share of the box
RADIUS_SCALE = 1.5
"""Lloyd rounds' radius over the start's spread (RMS distance of candidate means to centres)."""
REFINE_FACTOR = 3.0
"""Cells of the refining round per segment (at most the start's kept candidates)."""
RADIUS_FLOOR = 0.1
"""Least Lloyd radius, as a share of the norm bound: when the start keeps no more than k
candidates it shows no spread, and a radius near 0 would pin the centres where they start."""


@dataclass(frozen=True)
class RoundPlan:
    """Noise of one round: multipliers for the sums and the counts.

    The sums' sensitivity is at most ``norm_bound``, the counts' 1. A ``relative`` round's
    sums may be of displacements from the centres shortened to a radius below
    ``norm_bound`` (:class:`KMeansStage` chooses it), at the same multiplier. A ``refine``
    round runs with up to ``refine_factor * k`` cells instead of the k centres (the same
    release: each customer in one cell).
    """

    stage: str
    round: int
    sum_noise_multiplier: float
    count_noise_multiplier: float
    norm_bound: float
    relative: bool = False
    refine_factor: float = 1.0

    @property
    def refine(self) -> bool:
        """Whether this round refines the start with more cells than segments."""
        return self.refine_factor > 1.0

    def events(self) -> tuple[PrivacyEvent, PrivacyEvent]:
        """The two ledger events one partner records for this round (sums at most ``B``)."""
        out: list[PrivacyEvent] = []
        for comp, z, sens in (("sums", self.sum_noise_multiplier, self.norm_bound),
                              ("counts", self.count_noise_multiplier, 1.0)):
            if z == 0.0:
                out.append(NonPrivateEvent(sensitivity=sens, stage=self.stage, round=self.round,
                                           component=comp))
            else:
                out.append(GaussianEvent(noise_multiplier=z, sensitivity=sens, stage=self.stage,
                                         round=self.round, component=comp))
        return out[0], out[1]


@dataclass(frozen=True)
class KMeansPlan:
    """The whole run's noise, fixed before any release; composes to the target (epsilon, delta)."""

    epsilon: float
    delta: float
    mu: float
    rounds: tuple[RoundPlan, ...]
    radius_scale: float = RADIUS_SCALE
    radius_floor: float = RADIUS_FLOOR

    @property
    def non_private(self) -> bool:
        """Whether the plan adds no noise (epsilon = inf)."""
        return math.isinf(self.epsilon)

    def events(self) -> tuple[PrivacyEvent, ...]:
        """Every event one partner will record, in order."""
        return tuple(e for r in self.rounds for e in r.events())


def plan_kmeans(*, epsilon: float, delta: float, lloyd_rounds: int, norm_bound: float,
                init: InitMethod = "overcluster", init_share: float = 0.2,
                last_round_weight: float = 4.0, sum_share: float = 0.75,
                relative: bool = True, radius_scale: float = RADIUS_SCALE,
                radius_floor: float = RADIUS_FLOOR,
                refine_factor: float = REFINE_FACTOR) -> KMeansPlan:
    """Split a run's (epsilon, delta) over the init round and the Lloyd rounds, up front.

    The GDP budget ``mu`` of the target is split so that ``mu_r**2`` is ``init_share`` of
    ``mu**2`` for the init round, the rest over the Lloyd rounds with the last one weighted
    ``last_round_weight``; inside a round ``sum_share`` of ``mu_r**2`` goes to the sums.
    With ``relative`` every private Lloyd round releases displacement sums
    (:class:`RoundPlan`), clipped to ``radius_scale`` times the start's spread and at least
    ``radius_floor`` times the norm bound (:class:`KMeansStage`); a round without noise
    releases exact sums. After an over-clustering start with at least two Lloyd rounds the
    first one refines the start with ``refine_factor * k`` cells (1 turns it off).

    Examples
    --------
    >>> plan = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=3, norm_bound=2.0)
    >>> len(plan.events())
    8
    """
    if lloyd_rounds < 1:
        raise ContractError(f"The 'rounds' parameter must be an int >= 1. Got {lloyd_rounds!r}.")
    for name, share in (("init_share", init_share), ("sum_share", sum_share)):
        if not 0.0 < share < 1.0:
            raise ContractError(f"The {name!r} parameter must be in (0, 1). Got {share!r}.")
    for name, value in (("radius_scale", radius_scale), ("radius_floor", radius_floor),
                        ("refine_factor", refine_factor)):
        if not value > 0.0:
            raise ContractError(f"The {name!r} parameter must be > 0. Got {value!r}.")
    mu = gdp_mu(epsilon, delta)
    lloyd_w = [1.0] * (lloyd_rounds - 1) + [last_round_weight]
    weights = ([init_share * sum(lloyd_w) / (1 - init_share)] if init == "overcluster" else [])
    mus = split_mu(mu, weights + lloyd_w)
    stages = ([(INIT_STAGE, 0)] if init == "overcluster" else []) + \
        [(LLOYD_STAGE, r) for r in range(1, lloyd_rounds + 1)]
    refining = init == "overcluster" and lloyd_rounds >= 2
    rounds = []
    for (stage, rnd), mu_r in zip(stages, mus, strict=True):
        if math.isinf(mu_r):
            z_sum = z_count = 0.0
        else:
            z_sum = 1.0 / (mu_r * math.sqrt(sum_share))
            z_count = 1.0 / (mu_r * math.sqrt(1.0 - sum_share))
        rounds.append(RoundPlan(stage=stage, round=rnd, sum_noise_multiplier=z_sum,
                                count_noise_multiplier=z_count, norm_bound=norm_bound,
                                relative=relative and stage == LLOYD_STAGE and z_sum > 0.0,
                                refine_factor=refine_factor if refining and rnd == 1 else 1.0))
    return KMeansPlan(epsilon=epsilon, delta=delta, mu=mu, rounds=tuple(rounds),
                      radius_scale=radius_scale, radius_floor=radius_floor)


def candidate_centers(spec: FeatureSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` data-independent points of the contract's scaled box.

    Numeric coordinates are uniform within their public range; each categorical feature
    takes one declared level uniformly at random (a vertex of its one-hot simplex).
    """
    blocks = []
    for f in spec.features:
        if isinstance(f, CategoricalFeature):
            block = np.zeros((n, f.width))
            block[np.arange(n), rng.integers(0, f.width, size=n)] = f.weight
        else:
            block = rng.uniform(-f.weight / 2, f.weight / 2, size=(n, 1))
        blocks.append(block)
    return np.hstack(blocks)


@dataclass
class KMeansResult:
    """Output of a federated k-means run (everything here is a DP release or derived from one)."""

    centers: np.ndarray
    sizes: np.ndarray
    history: list[dict[str, object]] = field(default_factory=list)


class KMeansStage:
    """Federated DP k-means, one round at a time.

    Parameters
    ----------
    spec : FeatureSpec
        The contract (dimension, public box, norm bound).
    plan : KMeansPlan
        The noise of every round, fixed up front.
    k : int
        Number of segments, ``k >= 1``.
    n_partners : int
        Partners expected to answer (the aggregate noise std grows with sqrt of it).
    run_id, fingerprint : str
        Identify the run and the contract in every instruction.
    candidates : int
        Data-independent candidates of the over-clustering start (``>= k``).
    seed : int
        Seeds the data-independent candidates and the server-side re-clustering.
    initial_centers : ndarray, optional
        A public start (e.g. a published model's centres); skips the private start.
    initial_radius : float
        The Lloyd radius without a private start (e.g. the one a published model was
        trained with); 0 releases sums of vectors.
    k_range : (int, int), optional
        Choose k in this range from the private start's summary (``k`` is then the upper
        bound); see :func:`fedprofile.server.choose_k.choose_k`.
    min_segment_size : int
        The suppression threshold; with ``k_range`` every chosen segment must hold twice
        it in the start's summary (a margin for the rounds moving customers).
    """

    def __init__(self, *, spec: FeatureSpec, plan: KMeansPlan, k: int, n_partners: int,
                 run_id: str, fingerprint: str, candidates: int, seed: int,
                 initial_centers: np.ndarray | None = None, initial_radius: float = 0.0,
                 k_range: tuple[int, int] | None = None, min_segment_size: int = 0) -> None:
        if k < 1:
            raise ContractError(f"The 'k' parameter must be an int >= 1. Got {k!r} instead.")
        if candidates < k:
            raise ContractError(f"The 'candidates' parameter must be >= k ({k}). "
                                f"Got {candidates!r} instead.")
        self.spec, self.plan, self.k, self.seed = spec, plan, k, seed
        self.k_range, self.min_segment_size = k_range, min_segment_size
        self.k_curve: list[dict[str, float | bool]] = []
        self.run_id, self.fingerprint, self.n_partners = run_id, fingerprint, n_partners
        self._box = spec.box()
        rng = np.random.default_rng(seed)
        self._split_rng = np.random.default_rng([seed, 1])
        has_init = plan.rounds[0].stage == INIT_STAGE
        if initial_centers is not None:
            self.centers = np.asarray(initial_centers, dtype=float)
        elif has_init:
            self.centers = candidate_centers(spec, candidates, rng)
        else:
            self.centers = candidate_centers(spec, k, rng)
        self.sizes = np.zeros(len(self.centers))
        self.radius = min(max(float(initial_radius), 0.0), spec.norm_bound)
        self.history: list[dict[str, object]] = []
        self._summary: tuple[np.ndarray, np.ndarray] | None = None  # the start's means, weights
        self._cells: np.ndarray | None = None  # the refining round's centres

    def rounds(self) -> tuple[RoundPlan, ...]:
        """The rounds to run, in order."""
        return self.plan.rounds

    def configure(self, rnd: RoundPlan) -> KMeansRequest:
        """The instruction every partner receives for round ``rnd``."""
        self._cells = self._refining_cells(rnd.refine_factor) if rnd.refine else None
        return KMeansRequest(run_id=self.run_id, spec_fingerprint=self.fingerprint,
                             stage=rnd.stage, round=rnd.round,
                             centers=self.centers if self._cells is None else self._cells,
                             sum_noise_multiplier=rnd.sum_noise_multiplier,
                             count_noise_multiplier=rnd.count_noise_multiplier,
                             radius=self.radius if rnd.relative else 0.0)

    def aggregate(self, rnd: RoundPlan, replies: list[KMeansReply]) -> None:
        """Sum the partners' noised aggregates and update the centres."""
        n_answered = len(replies)
        sums = np.sum([r.sums for r in replies], axis=0)
        counts = np.sum([r.counts for r in replies], axis=0)
        count_sigma = rnd.count_noise_multiplier * math.sqrt(max(n_answered, 1))
        if rnd.stage == INIT_STAGE:
            sum_sigma = rnd.sum_noise_multiplier * rnd.norm_bound * math.sqrt(max(n_answered, 1))
            self.centers = self._initial_from_candidates(sums, counts, count_sigma, sum_sigma)
        elif self._cells is not None:
            self.centers = self._from_refined_cells(self._cells, sums, counts, count_sigma,
                                                    displacement=rnd.relative and self.radius > 0)
        else:
            self.centers = update_centers(self.centers, sums, counts,
                                          min_count=2.0 * count_sigma, box=self._box,
                                          rng=self._split_rng,
                                          displacement=rnd.relative and self.radius > 0)
            self.sizes = counts
        self.history.append({"stage": rnd.stage, "round": rnd.round,
                             "clip_radius": self.radius if rnd.relative else 0.0,
                             "centers_scaled": self.centers.tolist(),
                             "sizes_noisy": counts.tolist()
                             if rnd.stage != INIT_STAGE and self._cells is None else [],
                             **({"refined_cells": len(self._cells)}
                                if self._cells is not None else {})})
        self._cells = None

    def _refining_cells(self, factor: float) -> np.ndarray | None:
        """``factor * k`` cells from the start's summary, or None if that is not above k."""
        if self._summary is None:
            return None
        means, weights = self._summary
        cells = min(len(means), round(factor * self.k))
        if cells <= self.k:
            return None
        return means if cells == len(means) else \
            weighted_recluster(means, weights, cells, self.seed)

    def _from_refined_cells(self, cells: np.ndarray, sums: np.ndarray, counts: np.ndarray,
                            count_sigma: float, *, displacement: bool) -> np.ndarray:
        """K centres of the refined cells' noisy means (weighted by their noisy counts).

        Cells whose noisy count clears twice its noise standard deviation are kept (at least
        the k largest; a cell with no positive count stays where it was). A run from the
        start's centres competes with the k-means++ restarts, so the start's basin is kept
        unless the cells show a better one.
        """
        means = update_centers(cells, sums, counts, min_count=0.0, box=self._box,
                               displacement=displacement)
        keep: np.ndarray = counts > max(2.0 * count_sigma, 0.0)
        if keep.sum() < self.k:
            keep = np.argsort(-counts)[: self.k]
        if len(means[keep]) == self.k:
            return means[keep]
        return weighted_recluster(means[keep], np.maximum(counts[keep], 1e-12), self.k,
                                  self.seed, start=self.centers)

    def _initial_from_candidates(self, sums: np.ndarray, counts: np.ndarray,
                                 count_sigma: float, sum_sigma: float) -> np.ndarray:
        keep: np.ndarray = counts > max(2.0 * count_sigma, 0.0)  # a mask, or else indices below
        if keep.sum() < self.k:
            keep = np.argsort(-counts)[: max(self.k, int(keep.sum()))]
        means = np.clip(sums[keep] / np.maximum(counts[keep], 1e-12)[:, None], *self._box)
        weights = np.maximum(counts[keep], 1e-12)
        if self.k_range is not None:
            # choose k on the candidates whose noisy mean is precise (its noise at most
            # PRECISION of the box diagonal), then cluster every kept candidate with it
            diagonal = float(np.linalg.norm(self._box[1] - self._box[0]))
            error = sum_sigma * math.sqrt(self.spec.dim) / weights
            precise = error <= PRECISION * diagonal
            if precise.sum() <= self.k_range[0] + 1:
                precise[:] = True  # too few precise means to compare k: use them all
            choice = choose_k(means[precise], weights[precise], k_min=self.k_range[0],
                              k_max=self.k_range[1], min_mass=2.0 * self.min_segment_size,
                              seed=self.seed)
            self.k, self.k_curve = choice.k, choice.curve
        centers = means if len(means) == self.k else \
            weighted_recluster(means, weights, self.k, self.seed)
        self.radius = spread_radius(means, weights, centers, self.spec.norm_bound,
                                     self.plan.radius_scale, self.plan.radius_floor)
        self._summary = (means, weights)
        return centers

    def finalize(self) -> KMeansResult:
        """The final centres and the last round's noisy segment sizes."""
        return KMeansResult(centers=self.centers, sizes=self.sizes, history=self.history)
