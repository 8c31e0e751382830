"""Federated DP response models on the coordinator: ridge and logistic regression.

Ridge (DESIGN §5): one round of noised sufficient statistics ``Z'Z`` and ``Z'y``; the
coordinator symmetrises, floors the noisy matrix's eigenvalues at the noise level, adds a
ridge penalty set from the public noise level and dimension (AdaSSP-style, Wang 2018), and
solves. Both steps are post-processing of the release. Exact at epsilon = inf.

Logistic: a noised Gram round gives the bound ``H = Z'Z / 4 + alpha I`` on the logistic
Hessian; then each round partners send the noised sum of per-customer clipped gradients and
the coordinator takes the Newton-like step ``theta -= H^-1 (g + alpha theta)``, Böhning's
bounded-Hessian method (Böhning 1992), which descends monotonically without line search,
so a few rounds suffice and composition stays small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np

from fedprofile.errors import ContractError
from fedprofile.privacy.accounting import gdp_mu, split_mu
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent, PrivacyEvent
from fedprofile.protocol import GradientReply, GradientRequest, GramReply, GramRequest, ResponseTask

__all__ = ["LogisticStage", "RegressionResult", "ResponsePlan", "RidgeStage", "dp_ridge_penalty",
           "floor_noisy_gram", "noise_ridge_penalty", "plan_response", "solve_ridge",
           "symmetric_from_upper"]

Task = Literal["ridge", "logistic"]


def _event(z: float, sensitivity: float, stage: str, rnd: int, component: str) -> PrivacyEvent:
    if z == 0.0:
        return NonPrivateEvent(sensitivity=sensitivity, stage=stage, round=rnd,
                               component=component)
    return GaussianEvent(noise_multiplier=z, sensitivity=sensitivity, stage=stage, round=rnd,
                         component=component)


@dataclass(frozen=True)
class ResponsePlan:
    """Noise multipliers of every release of a response-model run, fixed up front."""

    task: Task
    epsilon: float
    delta: float
    mu: float
    gram_z: float
    target_z: float
    gradient_z: tuple[float, ...]
    norm_bound: float
    target_bound: float
    clip: float
    stage: str = ""
    """The policy stage the releases are charged to ("": ``task``; ``lookalike``)."""

    @property
    def non_private(self) -> bool:
        """Whether no noise is added (epsilon = inf)."""
        return math.isinf(self.epsilon)

    def events(self) -> tuple[PrivacyEvent, ...]:
        """Every event one partner records, in order."""
        stage = self.stage or self.task
        out = [_event(self.gram_z, self.norm_bound**2, stage, 0, "gram")]
        if self.task == "ridge":
            out.append(_event(self.target_z, self.norm_bound * self.target_bound, stage, 0,
                              "xty"))
        out += [_event(z, self.clip, stage, r + 1, "gradient")
                for r, z in enumerate(self.gradient_z)]
        return tuple(out)


def _z(mu: float) -> float:
    return 0.0 if math.isinf(mu) else 1.0 / mu


def plan_response(*, task: str, epsilon: float, delta: float, norm_bound: float,
                  target_bound: float, rounds: int = 3, clip: float = 0.0,
                  gram_share: float = 0.3, gram_share_ridge: float = 0.7,
                  stage: str = "") -> ResponsePlan:
    """Split (epsilon, delta) over the releases of a ridge or logistic run.

    Ridge: ``Z'Z`` gets ``gram_share_ridge`` of ``mu**2`` (its sensitivity ``B**2`` is the
    larger one), ``Z'y`` the rest. Logistic: the Gram round gets
    ``gram_share`` and the ``rounds`` gradient releases share the rest equally. ``clip`` is
    the per-customer gradient bound (0: the design norm bound, which clips nothing since a
    logistic gradient ``(p - y) z`` has norm at most ``|z|``). ``stage`` labels the
    releases for the policy (a lookalike run's logistic releases are ``lookalike``).
    """
    if task not in ("ridge", "logistic"):
        raise ContractError(f"The 'task' parameter must be 'ridge' or 'logistic'. Got {task!r}.")
    kind = cast(Task, task)  # checked just above
    if rounds < 1:
        raise ContractError(f"The 'rounds' parameter must be >= 1. Got {rounds!r} instead.")
    for name, value in (("norm_bound", norm_bound), ("target_bound", target_bound),
                        ("clip", clip)):
        if not (math.isfinite(value) and value >= 0):
            raise ContractError(f"The {name!r} parameter must be a finite number >= 0. "
                                f"Got {value!r} instead.")
    mu = gdp_mu(epsilon, delta)
    clip = clip or norm_bound
    if kind == "ridge":
        mu_gram, mu_target = split_mu(mu, [gram_share_ridge, 1.0 - gram_share_ridge])
        return ResponsePlan(task=kind, epsilon=epsilon, delta=delta, mu=mu, gram_z=_z(mu_gram),
                            target_z=_z(mu_target), gradient_z=(), norm_bound=norm_bound,
                            target_bound=target_bound, clip=clip)
    mus = split_mu(mu, [gram_share] + [(1.0 - gram_share) / rounds] * rounds)
    return ResponsePlan(task=kind, epsilon=epsilon, delta=delta, mu=mu, gram_z=_z(mus[0]),
                        target_z=0.0, gradient_z=tuple(_z(m) for m in mus[1:]),
                        norm_bound=norm_bound, target_bound=target_bound, clip=clip,
                        stage=stage)


def symmetric_from_upper(upper: np.ndarray, dim: int) -> np.ndarray:
    """The symmetric matrix whose row-major upper triangle (with diagonal) is ``upper``."""
    out = np.zeros((dim, dim))
    out[np.triu_indices(dim)] = upper
    return out + np.triu(out, 1).T


def _penalty(dim: int) -> np.ndarray:
    p = np.ones(dim)
    p[-1] = 0.0  # the intercept (last design column) is not penalised
    return np.diag(p)


def dp_ridge_penalty(gram: np.ndarray, noise_sigma: float) -> float:
    """Extra penalty so the noisy logistic Hessian bound stays well conditioned.

    ``max(0, sigma * sqrt(D) - lambda_min(gram))``: a symmetric Gaussian noise matrix has
    spectral norm about ``2 sigma sqrt(D)``; this lifts the smallest eigenvalue of the noisy
    matrix to ``sigma sqrt(D)``. Computed from the noisy matrix only, so it costs no privacy.
    Ridge uses :func:`floor_noisy_gram` and :func:`noise_ridge_penalty` instead.
    """
    if noise_sigma == 0.0:
        return 0.0
    bound = noise_sigma * math.sqrt(gram.shape[0])
    return max(0.0, bound - float(np.linalg.eigvalsh(gram)[0]))


def floor_noisy_gram(gram: np.ndarray, noise_sigma: float) -> np.ndarray:
    """The noisy Gram matrix with every eigenvalue below ``sigma sqrt(D)`` raised to it.

    Directions whose eigenvalue the noise can swamp (a symmetric Gaussian noise matrix has
    spectral norm about ``2 sigma sqrt(D)``) get that floor; the well-determined directions
    are left as released, where a uniform lift of the whole spectrum would shrink them too.
    Post-processing of the release (``sigma`` is the planned noise, public); the identity
    when ``sigma`` is 0, so the solve stays exact at epsilon = inf.
    """
    if noise_sigma == 0.0:
        return gram
    values, vectors = np.linalg.eigh((gram + gram.T) / 2)
    values = np.maximum(values, noise_sigma * math.sqrt(gram.shape[0]))
    return (vectors * values) @ vectors.T


RIDGE_NOISE_PENALTY = 0.5
"""Ridge penalty added on top of ``alpha``, in units of ``sigma sqrt(D)`` (BENCHMARKS.md)."""


def noise_ridge_penalty(noise_sigma: float, dim: int) -> float:
    """``RIDGE_NOISE_PENALTY * sigma * sqrt(D)``: from the planned noise and dimension only."""
    return RIDGE_NOISE_PENALTY * noise_sigma * math.sqrt(dim)


def solve_ridge(gram: np.ndarray, xty: np.ndarray, *, alpha: float, extra: float = 0.0
                ) -> np.ndarray:
    """``(Z'Z + (alpha + extra) P) theta = Z'y`` with the intercept unpenalised.

    With ``extra = 0`` this is scikit-learn's ``Ridge(alpha)`` with an intercept.
    """
    system = gram + (alpha + extra) * _penalty(gram.shape[0])
    eigmin = float(np.linalg.eigvalsh(system)[0])
    if eigmin <= 1e-9 * max(1.0, float(np.abs(system).max())):
        system = system + (abs(eigmin) + 1e-6) * np.eye(gram.shape[0])
    return np.linalg.solve(system, xty)


@dataclass
class RegressionResult:
    """Coefficients over the design columns (last one: intercept) and the penalty used."""

    coef: np.ndarray
    penalty: float
    history: list[list[float]] = field(default_factory=list)
    gram_diagonal: np.ndarray | None = None
    """The summed noisy ``diag(Z'Z)`` (post-processing: which slots customers hold)."""
    gram_noise_sd: float = 0.0
    """The standard deviation of its noise."""


class RidgeStage:
    """One round: noised sufficient statistics, then a post-processed ridge solve."""

    def __init__(self, *, plan: ResponsePlan, task: ResponseTask, dim: int, alpha: float) -> None:
        self.plan, self.task, self.dim, self.alpha = plan, task, dim, alpha
        self.result: RegressionResult | None = None

    def rounds(self) -> tuple[int, ...]:
        """One round."""
        return (0,)

    def configure(self, rnd: int) -> GramRequest:
        """The instruction of the round."""
        return GramRequest(task=self.task, gram_noise_multiplier=self.plan.gram_z,
                           target_noise_multiplier=self.plan.target_z, with_target=True)

    def aggregate(self, rnd: int, replies: list[GramReply]) -> None:
        """Sum the partners' statistics and solve."""
        gram = symmetric_from_upper(np.sum([r.gram_upper for r in replies], axis=0), self.dim)
        xty = np.sum([r.xty for r in replies], axis=0)
        sigma = self.plan.gram_z * self.plan.norm_bound**2 * math.sqrt(len(replies))
        extra = noise_ridge_penalty(sigma, self.dim)
        self.result = RegressionResult(coef=solve_ridge(floor_noisy_gram(gram, sigma), xty,
                                                        alpha=self.alpha, extra=extra),
                                       penalty=self.alpha + extra,
                                       gram_diagonal=np.diag(gram).copy(), gram_noise_sd=sigma)

    def finalize(self) -> RegressionResult:
        """The fitted coefficients."""
        if self.result is None:
            raise ContractError("The ridge stage has not aggregated its round yet.")
        return self.result


class LogisticStage:
    """A noised Hessian bound, then bounded-Hessian Newton steps on noised gradient sums."""

    def __init__(self, *, plan: ResponsePlan, task: ResponseTask, dim: int, alpha: float) -> None:
        self.plan, self.task, self.dim, self.alpha = plan, task, dim, alpha
        self.theta = np.zeros(dim)
        self._h_inv: np.ndarray | None = None
        self.history: list[list[float]] = []
        self._diagonal: np.ndarray | None = None
        self._sigma = 0.0

    def rounds(self) -> tuple[int, ...]:
        """The Gram round, then one round per gradient step."""
        return tuple(range(1 + len(self.plan.gradient_z)))

    def configure(self, rnd: int) -> GramRequest | GradientRequest:
        """The instruction of round ``rnd``."""
        task = ResponseTask(**{**self.task.__dict__, "round": rnd})
        if rnd == 0:
            return GramRequest(task=task, gram_noise_multiplier=self.plan.gram_z,
                               target_noise_multiplier=0.0, with_target=False)
        return GradientRequest(task=task, theta=self.theta, clip=self.plan.clip,
                               noise_multiplier=self.plan.gradient_z[rnd - 1])

    def aggregate(self, rnd: int, replies: list[GramReply] | list[GradientReply]) -> None:
        """Build the Hessian bound (round 0) or take one Newton-like step."""
        if rnd == 0:
            # round 0 sends a GramRequest (configure), so every reply was decoded as a GramReply
            grams = cast("list[GramReply]", replies)
            gram = symmetric_from_upper(np.sum([r.gram_upper for r in grams], axis=0),
                                        self.dim)
            sigma = self.plan.gram_z * self.plan.norm_bound**2 * math.sqrt(len(replies))
            self._diagonal, self._sigma = np.diag(gram).copy(), sigma
            extra = dp_ridge_penalty(gram / 4 + self.alpha * _penalty(self.dim), sigma / 4)
            hessian = gram / 4 + (self.alpha + extra) * _penalty(self.dim)
            eigmin = float(np.linalg.eigvalsh(hessian)[0])
            if eigmin <= 0:
                hessian += (abs(eigmin) + 1e-6) * np.eye(self.dim)
            self._h_inv = np.linalg.inv(hessian)
            return
        # later rounds send a GradientRequest (configure): every reply is a GradientReply
        gradients = cast("list[GradientReply]", replies)
        grad = np.sum([r.gradient for r in gradients], axis=0)
        grad = grad + self.alpha * (_penalty(self.dim) @ self.theta)
        if self._h_inv is None:
            raise ContractError("A gradient round came before the Gram round.")
        self.theta = self.theta - self._h_inv @ grad
        self.history.append(self.theta.tolist())

    def finalize(self) -> RegressionResult:
        """The fitted coefficients."""
        return RegressionResult(coef=self.theta, penalty=self.alpha, history=self.history,
                                gram_diagonal=self._diagonal, gram_noise_sd=self._sigma)
