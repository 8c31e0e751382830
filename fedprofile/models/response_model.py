"""Published response models (ridge for value, logistic for conversion): JSON and scoring."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from fedprofile.contract.design import design_names, feature_mask
from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import parse_spec
from fedprofile.contract.spec import FeatureSpec, NumericFeature
from fedprofile.contract.targets import unscale_target
from fedprofile.errors import ContractError
from fedprofile.io.tables import check_document
from fedprofile.models.document import ModelDocument

__all__ = ["FORMAT", "VERSION", "ResponseModel"]

FORMAT, VERSION = "fedprofile.response_model", 1


class ResponseModel(ModelDocument):
    """A fitted federated ridge or logistic regression.

    Attributes
    ----------
    coef_ : ndarray
        Coefficients over the design columns ``[features, segment one-hot, intercept]``,
        in the contract's scaled units (targets scaled to ``[-1/2, 1/2]`` for ridge).
    """

    def __init__(self, *, task: str, spec: FeatureSpec, target: str, coef: np.ndarray,
                 penalty: float, privacy: Mapping[str, Any], params: Mapping[str, Any],
                 partners: list[str], segment_centers: np.ndarray | None = None,
                 created_at: str | None = None) -> None:
        if task not in ("ridge", "logistic"):
            raise ContractError(f"Unknown response task {task!r}; use 'ridge' or 'logistic'.")
        if target not in spec.targets:
            raise ContractError(f"Target {target!r} is not declared in the model's spec.")
        self.task, self.spec, self.target = task, spec, target
        self.coef_ = np.asarray(coef, dtype=float)
        self.segment_centers = (np.zeros((0, spec.dim)) if segment_centers is None
                                else np.asarray(segment_centers, dtype=float).reshape(-1, spec.dim))
        self.feature_names_ = design_names(spec, target, len(self.segment_centers))
        if len(self.coef_) != len(self.feature_names_):
            raise ContractError(f"The model has {len(self.coef_)} coefficients for "
                                f"{len(self.feature_names_)} design columns.")
        self.penalty_ = float(penalty)
        self.privacy, self.params, self.partners = dict(privacy), dict(params), list(partners)
        self.created_at = created_at or datetime.now(UTC).isoformat(timespec="seconds")

    def design(self, frame: pd.DataFrame, *, mapping: Mapping[str, str] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Design rows of ``frame`` and which rows have them (no dropped value)."""
        fm = transform_frame(frame, self.spec, mapping=mapping)
        blocks = [np.asarray(fm.matrix)[:, feature_mask(self.spec, self.target)]]
        if len(self.segment_centers):
            from fedprofile.contract.assignment import assign

            onehot = np.zeros((len(fm.matrix), len(self.segment_centers)))
            onehot[np.arange(len(fm.matrix)), assign(np.asarray(fm.matrix),
                                                     self.segment_centers)] = 1.0
            blocks.append(onehot)
        blocks.append(np.ones((len(fm.matrix), 1)))
        return np.hstack(blocks), fm.keep

    def decision(self, z: np.ndarray) -> np.ndarray:
        """Linear score ``z @ coef_`` of design rows."""
        return np.asarray(z) @ self.coef_

    def predict(self, frame: pd.DataFrame, *, mapping: Mapping[str, str] | None = None
                ) -> pd.Series:
        """Ridge: the predicted target in original units; logistic: the class (0/1)."""
        z, keep = self.design(frame, mapping=mapping)
        if self.task == "ridge":
            values = unscale_target(np.clip(self.decision(z), -0.5, 0.5),
                                    self.spec.targets[self.target])
        else:
            values = (self.decision(z) > 0).astype(float)
        out = pd.Series(np.nan, index=frame.index)
        out[keep] = values
        return out

    def predict_proba(self, frame: pd.DataFrame, *, mapping: Mapping[str, str] | None = None
                      ) -> pd.Series:
        """Logistic only: the probability of the positive class."""
        if self.task != "logistic":
            raise ContractError("predict_proba is only defined for logistic models.")
        z, keep = self.design(frame, mapping=mapping)
        out = pd.Series(np.nan, index=frame.index)
        out[keep] = 1.0 / (1.0 + np.exp(-self.decision(z)))
        return out

    def coefficients(self) -> list[dict[str, Any]]:
        """Coefficients with readable names; numeric features also per original unit.

        ``supported`` is False for a one-hot slot no customer holds (judged from the noisy
        Gram diagonal when the model was fitted): its coefficient carries no information.
        """
        rows = []
        slices = self.spec.slices()
        unsupported = set(self.params.get("unsupported_columns") or [])
        for name, value in zip(self.feature_names_, self.coef_, strict=True):
            row: dict[str, Any] = {"name": name, "scaled": float(value),
                                   "supported": name not in unsupported}
            feature = name.split("=", 1)[0]
            if feature in slices and "=" not in name:
                f = self.spec.feature(feature)
                if isinstance(f, NumericFeature) and f.transform == "none":
                    row["per_unit"] = float(value * f.weight / (f.bounds[1] - f.bounds[0]))
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON document of the model."""
        return {"format": FORMAT, "version": VERSION, "created_at": self.created_at,
                "task": self.task, "target": self.target, "federation": self.spec.name,
                "feature_names": self.feature_names_, "coef": self.coef_.tolist(),
                "coefficients": self.coefficients(), "penalty": self.penalty_,
                "segment_centers": self.segment_centers.tolist(),
                "spec": self.spec.to_dict(), "spec_fingerprint": self.spec.fingerprint(),
                "privacy": self.privacy, "params": self.params, "partners": self.partners}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, source: str = "<model>") -> ResponseModel:
        """Rebuild a model from its JSON document."""
        check_document(doc, fmt=FORMAT, version=VERSION, source=source)
        spec = parse_spec(doc["spec"], source=source)
        return cls(task=doc["task"], spec=spec, target=doc["target"], coef=doc["coef"],
                   penalty=doc["penalty"], privacy=doc["privacy"], params=doc["params"],
                   partners=doc["partners"], segment_centers=np.asarray(doc["segment_centers"]),
                   created_at=doc.get("created_at"))
