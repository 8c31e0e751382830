"""Published lookalike models: "seed vs everyone" logistic regression, JSON and scoring.

The model holds only the DP coefficients, the seed's definition (never its members), the
privacy record and, in simulation, the held-out evaluation. Every partner scores its own
customers with it and selects its audience locally (:func:`select_audience`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from fedprofile.contract.customers import ID_COLUMN
from fedprofile.contract.features import transform_frame
from fedprofile.contract.lookalike import SeedAudience, lookalike_mask, lookalike_names
from fedprofile.contract.parser import parse_spec
from fedprofile.contract.spec import FeatureSpec
from fedprofile.errors import ContractError
from fedprofile.io.tables import check_document
from fedprofile.models.document import ModelDocument

__all__ = ["FORMAT", "VERSION", "LookalikeModel", "select_audience"]

FORMAT, VERSION = "fedprofile.lookalike_model", 1


class LookalikeModel(ModelDocument):
    """A federated DP logistic model of seed membership over the contract's features."""

    def __init__(self, *, spec: FeatureSpec, seed: SeedAudience, coef: np.ndarray,
                 penalty: float, privacy: Mapping[str, Any], params: Mapping[str, Any],
                 partners: list[str], created_at: str | None = None) -> None:
        self.spec, self.seed = spec, seed
        self.coef_ = np.asarray(coef, dtype=float)
        self.feature_names_ = lookalike_names(spec, seed)
        if len(self.coef_) != len(self.feature_names_):
            raise ContractError(f"The lookalike model has {len(self.coef_)} coefficients for "
                                f"{len(self.feature_names_)} design columns.")
        self.penalty_ = float(penalty)
        self.privacy, self.params, self.partners = dict(privacy), dict(params), list(partners)
        self.created_at = created_at or datetime.now(UTC).isoformat(timespec="seconds")

    def design(self, frame: pd.DataFrame, *, mapping: Mapping[str, str] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Design rows of ``frame`` and which rows have them (no dropped value)."""
        fm = transform_frame(frame, self.spec, mapping=mapping)
        x = np.asarray(fm.matrix, dtype=float)[:, lookalike_mask(self.spec, self.seed)]
        return np.hstack([x, np.ones((len(x), 1))]), fm.keep

    def decision(self, z: np.ndarray) -> np.ndarray:
        """Linear score ``z @ coef_`` of design rows."""
        return np.asarray(z) @ self.coef_

    def predict_proba(self, frame: pd.DataFrame, *, mapping: Mapping[str, str] | None = None
                      ) -> pd.Series:
        """The modelled probability of seed membership of every row (NaN where dropped)."""
        z, keep = self.design(frame, mapping=mapping)
        out = pd.Series(np.nan, index=frame.index)
        out[keep] = 1.0 / (1.0 + np.exp(-self.decision(z)))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON document of the model."""
        return {"format": FORMAT, "version": VERSION, "created_at": self.created_at,
                "task": "lookalike", "seed": asdict(self.seed),
                "seed_description": self.seed.describe(), "federation": self.spec.name,
                "feature_names": self.feature_names_, "coef": self.coef_.tolist(),
                "coefficients": [{"name": n, "scaled": float(v)} for n, v in
                                 zip(self.feature_names_, self.coef_, strict=True)],
                "penalty": self.penalty_, "spec": self.spec.to_dict(),
                "spec_fingerprint": self.spec.fingerprint(), "privacy": self.privacy,
                "params": self.params, "partners": self.partners}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, source: str = "<model>") -> LookalikeModel:
        """Rebuild a model from its JSON document."""
        check_document(doc, fmt=FORMAT, version=VERSION, source=source)
        return cls(spec=parse_spec(doc["spec"], source=source),
                   seed=SeedAudience(**doc["seed"]), coef=doc["coef"], penalty=doc["penalty"],
                   privacy=doc["privacy"], params=doc["params"], partners=doc["partners"],
                   created_at=doc.get("created_at"))


def select_audience(table: pd.DataFrame, model: LookalikeModel, *, size: int,
                    threshold: float, exclude: np.ndarray | None = None,
                    mapping: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A partner's lookalike audience: its best-scored customers, best first.

    At most ``size`` customers (0: no limit) whose score is at least ``threshold``;
    ``exclude`` (the seed owner's seed members) are left out. The output holds the
    pseudonymised id (``pid``, or the contract's customer id) or, without one, the row's
    position in the partner's own table, the score and the rank: no feature, no raw
    identifier.
    """
    scores = model.predict_proba(table, mapping=mapping).to_numpy()
    eligible = np.isfinite(scores)
    if exclude is not None:
        eligible &= ~np.asarray(exclude, dtype=bool)
    if threshold > 0:
        eligible &= scores >= threshold
    rows = np.flatnonzero(eligible)
    rows = rows[np.argsort(-scores[rows], kind="stable")]
    if size > 0:
        rows = rows[:size]
    key = (model.spec.customers.id if model.spec.customers else None) or \
        (ID_COLUMN if ID_COLUMN in table.columns else None)
    ids = table[key].to_numpy()[rows] if key else rows
    return pd.DataFrame({key or "row": ids, "score": scores[rows],
                         "rank": np.arange(1, len(rows) + 1)})
