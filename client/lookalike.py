"""The partner's side of lookalike runs: its seed (owner only), design rows and audience.

Only the seed owner reads its seed (a column, an expression or its own ``seed-file``) and
checks it against its policy's ``min_seed_size``; every other partner's customers are all
negatives. Selection happens locally: the audience file (pseudonymised ids, scores, ranks)
is written to the partner's output folder and the reply holds nothing.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from fedprofile.client.checks import NotReadyError
from fedprofile.client.site import PartnerSite
from fedprofile.contract.design import DesignData, design_names, design_norm_bound
from fedprofile.contract.lookalike import (
    SeedAudience,
    lookalike_design,
    lookalike_names,
    lookalike_norm_bound,
    read_seed_file,
    seed_labels,
)
from fedprofile.errors import ProtocolError
from fedprofile.io.tables import write_table
from fedprofile.models.lookalike_model import LookalikeModel, select_audience
from fedprofile.protocol import LookalikeReply, LookalikeRequest, ResponseTask

__all__ = ["check_seed", "design_bound", "design_rows", "design_width", "lookalike_select",
           "seed_members"]

log = logging.getLogger("fedprofile.client")


def seed_members(site: PartnerSite, seed: SeedAudience) -> np.ndarray | None:
    """Which of the partner's customers are in the seed; None unless it is the seed owner."""
    if seed.partner != site.name:
        return None
    members = read_seed_file(site.config.seed_file) if seed.file and site.config.seed_file \
        else None
    return seed_labels(site.customers(), seed, members=members, source=site.source_label)


def check_seed(site: PartnerSite, seed: SeedAudience) -> None:
    """The seed owner refuses a seed that is missing, too small, or every customer.

    The message sent back holds no count; the partner's own log has it (``hint``).
    """
    labels = seed_members(site, seed)
    if labels is None:
        return
    size, minimum = int(labels.sum()), site.policy.min_seed_size
    if size < minimum:
        raise NotReadyError(f"The seed audience ({seed.describe()}) is smaller than this "
                            f"partner's minimum of {minimum} customers (policy "
                            "'min_seed_size'); nothing was released.",
                            hint=f"the seed holds {size} customers")
    if size == len(labels):
        raise NotReadyError(f"Every customer of {seed.partner!r} is in the seed audience "
                            f"({seed.describe()}); a lookalike model needs customers "
                            "outside it.", hint=f"the seed holds all {size} customers")


def design_bound(site: PartnerSite, task: ResponseTask) -> float:
    """The public norm bound of the task's design rows."""
    if task.seed is not None:
        return lookalike_norm_bound(site.spec, task.seed)
    return design_norm_bound(site.spec, task.target,
                             segment_aware=bool(task.segment_centers.size))


def design_width(site: PartnerSite, task: ResponseTask) -> int:
    """The number of design columns of the task."""
    if task.seed is not None:
        return len(lookalike_names(site.spec, task.seed))
    segments = task.segment_centers.shape[0] if task.segment_centers.size else 0
    return len(design_names(site.spec, task.target, segments))


def design_rows(site: PartnerSite, task: ResponseTask) -> DesignData:
    """The task's design rows: the response model's, or "seed vs everyone"."""
    if task.seed is None:
        return site.design(task)
    check_seed(site, task.seed)
    return lookalike_design(site.customers(), site.spec, task.seed,
                            seed_members(site, task.seed), holdout=task.holdout,
                            holdout_seed=task.holdout_seed, mapping=site.mapping,
                            source=site.source_label)


def lookalike_select(request: LookalikeRequest, site: PartnerSite) -> LookalikeReply:
    """Score every customer with the published model and write the partner's audience."""
    site.check_contract(request.spec_fingerprint)
    site.guard.check_announced(run_id=request.run_id, stage="lookalike")
    model = LookalikeModel.from_dict(json.loads(request.model), source="coordinator")
    if model.spec.fingerprint() != site.spec.fingerprint() or model.seed != request.seed:
        raise ProtocolError(f"{request.message_type} request: the model does not match the "
                            "run's contract or seed audience.")
    audience = select_audience(site.customers(), model, size=request.size,
                               threshold=request.threshold,
                               exclude=seed_members(site, request.seed), mapping=site.mapping)
    write_table(audience, site.output_path(f"lookalike-{request.run_id}.parquet"))
    log.info("Partner %s: lookalike audience of %d customers written locally.", site.name,
             len(audience))
    return LookalikeReply()
