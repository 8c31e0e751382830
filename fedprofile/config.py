"""Typed, validated run and node configuration (parsed once, at the boundary).

Flower hands the apps flat ``run_config`` and ``node_config`` dicts. They are parsed here
into frozen dataclasses so a typo or a bad value fails at once with a message naming the
key, the allowed range and the value, instead of deep inside a stage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, cast, get_args

from fedprofile.config_values import config_float as _float
from fedprofile.config_values import config_int as _int
from fedprofile.config_values import config_str as _str
from fedprofile.errors import ContractError
from fedprofile.node_config import NodeConfig
from fedprofile.run_defaults import (
    SECAGG_TASKS,
    default_candidates,
    default_noise,
    default_rounds,
)

__all__ = ["TASKS", "InitMethod", "NodeConfig", "RunConfig"]

InitMethod = Literal["overcluster", "random"]
_INIT_METHODS: tuple[str, ...] = get_args(InitMethod)
TASKS = ("segments", "ridge", "logistic", "pipeline", "overlap", "lookalike")
NOISE_PLACEMENTS = ("partner", "secagg")
NOISE_CHOICES = ("auto", *NOISE_PLACEMENTS)
_DERIVED = {"k_auto", "noise_auto"}
"""Fields parsed from other keys (``k = "auto"``, ``noise = "auto"``), never set directly."""


def _run_id(cfg: Mapping[str, Any]) -> str:
    from fedprofile.protocol.codec import RUN_ID_PATTERN

    value = _str(cfg, "run_id", "")
    if value and not RUN_ID_PATTERN.fullmatch(value):
        raise ContractError("The 'run-id' parameter must be 1 to 64 letters, digits, '_' or "
                            f"'-'. Got {value!r} instead.")
    return value


@dataclass(frozen=True)
class RunConfig:
    """The coordinator's parameters of one segmentation run (``[tool.flwr.app.config]``).

    Attributes
    ----------
    spec : str
        Path of the feature contract TOML, or the name of a shipped one (``bank``,
        ``hillstrom``, ``retail``…; see :func:`fedprofile.contract.load_spec`).
    k : int, default=6
        Number of segments, in ``[1, 100]``; the run config value ``"auto"`` sets
        ``k_auto`` and ``k`` to ``k_max``, the most segments the run may publish.
    k_auto : bool, default=False
        Choose the number of segments in ``[k_min, k_max]`` from the private start's noisy
        summary (post-processing: no extra epsilon); needs the over-clustering start.
    k_min, k_max : int, default=2, 10
        The range ``--k auto`` chooses from, ``2 <= k_min <= k_max <= 100``.
    start_from : str
        A published segment model JSON whose centres start the Lloyd rounds (a refresh):
        no private start, so the whole budget goes to the rounds; ``k`` is the model's.
    epsilon : float, default=1.0
        Target epsilon of the whole run (init included), in ``(0, inf]``; ``inf`` is an
        explicitly non-private run.
    delta : float, default=1e-6
        Target delta, in ``(0, 0.1]``.
    rounds : int, default=0
        Lloyd rounds after the start, in ``[1, 50]``; 0 means :func:`default_rounds` of
        ``epsilon``, ``noise``, the partners and ``secagg_dropouts``.
    init : {"overcluster", "random"}, default="overcluster"
        Private start (DP over-clustering) or data-independent random centres.
    candidates : int, default=0
        Candidates of the over-clustering start; 0 means
        :func:`default_candidates` of ``k``, the contract's dimension and whether the run
        is private.
    min_segment_size : int, default=50
        Segments with a smaller noisy size are suppressed.
    min_partners : int, default=2
        The run stops if fewer partners answer.
    seed : int, default=0
        Seeds the data-independent candidates and server-side re-clustering.
    out_dir : str
        Where the coordinator writes ``model.json`` and its ledger.
    timeout : float, default=600
        Seconds to wait for the replies of one round.
    dataset : str
        Simulation under ``flwr run`` only: virtual nodes without a ``data-path`` take their
        slice of this shipped data set.
    task : {"segments", "ridge", "logistic", "pipeline", "overlap"}, default="segments"
        What to learn; ``pipeline`` learns segments, then a segment-aware response model
        for ``target`` (ridge or logistic by the target's kind), then has every partner
        score its customers locally; epsilon covers the whole pipeline. ``overlap`` counts
        the customers each pair of partners shares (PSI cardinality; epsilon per count).
    target : str
        The contract's target of a response model.
    alpha : float, default=1.0
        Ridge penalty of response models (on scaled features), in ``[0, inf)``.
    gd_rounds : int, default=3
        Gradient rounds of logistic regression, in ``[1, 100]``.
    clip : float, default=0
        Per-customer gradient bound of logistic regression (0: the design norm bound).
    holdout : float, default=0.2
        Share of each partner's customers kept aside for testing, in ``[0, 1)``.
    segments : str
        A segment model JSON; response models then use the segment as a feature.
    expected_partners : int, default=0
        Wait (up to 120 s) for this many partners before starting; 0 waits for
        ``min_partners``.
    run_id : str
        The run's id ("" draws a fresh random one, the normal case). A run id can be used
        once at each partner; simulations that must be reproducible name theirs, since
        simulated partners seed their noise with it.
    pairs : str
        Overlap only: the pairs to count, ``"A:B,A:C"`` by partner name ("" = every pair).
    seed_partner, seed_column, seed_expr : str; seed_file : bool
        Lookalike only: the seed owner (a partner name) and its seed audience, one of a
        column of its data, an expression over its columns (``y == "yes"``) or its own
        node config's ``seed-file`` of pseudonymised ids (never read by the coordinator).
    lookalike_size : int, default=1000; lookalike_threshold : float, default=0
        Lookalike only: each partner selects at most this many customers (0: no limit)
        scoring at least the threshold (0: none).
    noise : {"partner", "secagg"}
        Each partner adds all the noise, or a share of it to securely summed sums. The run
        config's default, ``"auto"``, is resolved when parsed (:func:`default_noise`):
        ``secagg`` for a private segments, ridge, logistic or pipeline run planned for at
        least 3 partners, else ``partner``.
    noise_auto : bool
        Whether ``noise`` was chosen by ``"auto"``: then a partner whose policy demands
        partner noise makes the coordinator plan the run again with ``partner`` noise.
    secagg_dropouts : int, default=0
        Under ``secagg``: partners that may drop out or collude with the coordinator while
        every released sum keeps its planned noise.
    """

    spec: str = "bank"
    k: int = 6
    k_auto: bool = False
    k_min: int = 2
    k_max: int = 10
    start_from: str = ""
    epsilon: float = 1.0
    delta: float = 1e-6
    rounds: int = 0
    init: InitMethod = "overcluster"
    candidates: int = 0
    min_segment_size: int = 50
    min_partners: int = 2
    seed: int = 0
    out_dir: str = "runs/latest"
    timeout: float = 600.0
    dataset: str = ""
    task: str = "segments"
    target: str = ""
    alpha: float = 1.0
    gd_rounds: int = 3
    clip: float = 0.0
    holdout: float = 0.2
    segments: str = ""
    expected_partners: int = 0
    run_id: str = ""
    pairs: str = ""
    seed_partner: str = ""
    seed_column: str = ""
    seed_expr: str = ""
    seed_file: bool = False
    lookalike_size: int = 1000
    lookalike_threshold: float = 0.0
    noise: str = "partner"
    noise_auto: bool = False
    secagg_dropouts: int = 0

    @property
    def fewest_segments(self) -> int:
        """The fewest segments the run may publish (``k_min`` under ``k = 'auto'``)."""
        return self.k_min if self.k_auto else self.k

    @property
    def lloyd_rounds(self) -> int:
        """The Lloyd rounds the run plans: ``rounds``, or :func:`default_rounds` if 0.

        The default is planned from public values only: the budget, the noise placement,
        the partners the run waits for (the fewest it may have) and the declared dropouts.
        """
        return self.rounds or default_rounds(
            self.epsilon, delta=self.delta, noise=self.noise,
            partners=max(self.expected_partners, self.min_partners),
            dropouts=self.secagg_dropouts)

    def n_candidates(self, dim: int) -> int:
        """Candidates of the over-clustering start for a contract of dimension ``dim``."""
        return self.candidates or default_candidates(self.k, dim,
                                                     private=math.isfinite(self.epsilon))

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> RunConfig:
        """Parse Flower's flat run config (keys spelled with dashes)."""
        cfg = {str(k).replace("-", "_"): v for k, v in cfg.items()}
        known = {f.name for f in fields(cls)} - _DERIVED
        unknown = set(cfg) - known - NodeConfig.known_keys()
        if unknown:
            raise ContractError(f"Unknown run config key(s) {sorted(unknown)}; known: "
                                f"{sorted(known)}.")
        init = _str(cfg, "init", cls.init)
        if init not in _INIT_METHODS:
            raise ContractError(f"The 'init' parameter must be one of {list(_INIT_METHODS)}. "
                                f"Got {init!r} instead.")
        task = _str(cfg, "task", cls.task)
        if task not in TASKS:
            raise ContractError(f"The 'task' parameter must be one of {list(TASKS)}. "
                                f"Got {task!r} instead.")
        target = _str(cfg, "target", "")
        if task not in ("segments", "overlap", "lookalike") and not target:
            raise ContractError(f"Task {task!r} needs a 'target' (a [target.NAME] of the spec).")
        k_auto = str(cfg.get("k", "")).strip().lower() == "auto"
        k_min = _int(cfg, "k_min", cls.k_min, low=2, high=100)
        k_max = _int(cfg, "k_max", cls.k_max, low=k_min, high=100)
        k = k_max if k_auto else _int(cfg, "k", cls.k, low=1, high=100)
        start_from = _str(cfg, "start_from", "")
        if k_auto and (init != "overcluster" or start_from):
            raise ContractError("k = 'auto' chooses from the over-clustering start's summary; "
                                "it needs init = 'overcluster' and no 'start_from'.")
        candidates = _int(cfg, "candidates", cls.candidates, low=0, high=100_000)
        if 0 < candidates < k:
            raise ContractError(f"The 'candidates' parameter must be 0 or >= k ({k}). "
                                f"Got {candidates!r} instead.")
        noise = _str(cfg, "noise", "auto")
        if noise not in NOISE_CHOICES:
            raise ContractError(f"The 'noise' parameter must be one of {list(NOISE_CHOICES)}."
                                f" Got {noise!r} instead.")
        if noise == "secagg" and task not in SECAGG_TASKS:
            raise ContractError(f"noise = 'secagg' covers the segments, ridge, logistic and "
                                f"pipeline tasks; task {task!r} uses partner noise.")
        epsilon = _float(cfg, "epsilon", cls.epsilon, open_low=0.0, allow_inf=True)
        min_partners = _int(cfg, "min_partners", cls.min_partners, low=1)
        expected = _int(cfg, "expected_partners", 0, low=0)
        noise_auto = noise == "auto"
        if noise_auto:
            noise = default_noise(task, epsilon, max(expected, min_partners))
        return cls(spec=_str(cfg, "spec", cls.spec), k=k, k_auto=k_auto, k_min=k_min,
                   k_max=k_max, start_from=start_from,
                   epsilon=epsilon,
                   delta=_float(cfg, "delta", cls.delta, open_low=0.0, high=0.1),
                   rounds=_int(cfg, "rounds", cls.rounds, low=0, high=50),
                   init=cast(InitMethod, init),
                   candidates=candidates,
                   min_segment_size=_int(cfg, "min_segment_size", cls.min_segment_size, low=0),
                   min_partners=min_partners,
                   seed=_int(cfg, "seed", cls.seed, low=0),
                   out_dir=_str(cfg, "out_dir", cls.out_dir),
                   timeout=_float(cfg, "timeout", cls.timeout, open_low=0.0),
                   dataset=_str(cfg, "dataset", ""), task=task, target=target,
                   alpha=_float(cfg, "alpha", cls.alpha, open_low=-1e-300),
                   gd_rounds=_int(cfg, "gd_rounds", cls.gd_rounds, low=1, high=100),
                   clip=_float(cfg, "clip", cls.clip, open_low=-1e-300),
                   holdout=_float(cfg, "holdout", cls.holdout, open_low=-1e-300, high=0.99),
                   segments=_str(cfg, "segments", ""),
                   expected_partners=expected,
                   run_id=_run_id(cfg), pairs=_str(cfg, "pairs", ""), noise=noise,
                   noise_auto=noise_auto,
                   secagg_dropouts=_int(cfg, "secagg_dropouts", 0, low=0, high=1000),
                   **_lookalike(cfg, task))


def _lookalike(cfg: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The lookalike keys, checked: a seed partner and exactly one seed definition."""
    seed_file = cfg.get("seed_file", False)
    if not isinstance(seed_file, bool):
        raise ContractError("The 'seed-file' run config key is true or false: the seed "
                            f"owner's node config names its file. Got {seed_file!r}.")
    out: dict[str, Any] = {"seed_partner": _str(cfg, "seed_partner", ""),
                           "seed_column": _str(cfg, "seed_column", ""),
                           "seed_expr": _str(cfg, "seed_expr", ""), "seed_file": seed_file,
                           "lookalike_size": _int(cfg, "lookalike_size", 1000, low=0),
                           "lookalike_threshold": _float(cfg, "lookalike_threshold", 0.0,
                                                         open_low=-1e-300, high=1.0)}
    if task == "lookalike":
        from fedprofile.contract.lookalike import SeedAudience

        SeedAudience(partner=out["seed_partner"], column=out["seed_column"],
                     expr=out["seed_expr"], file=seed_file)  # fails with its reason
        if not out["lookalike_size"] and not out["lookalike_threshold"]:
            raise ContractError("A lookalike run needs a 'lookalike-size' >= 1 or a "
                                "'lookalike-threshold' in (0, 1].")
    return out
