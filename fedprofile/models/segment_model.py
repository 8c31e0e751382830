"""The published segment model: versioned JSON, profiles, tags, and local scoring.

Everything in a model is a DP release or post-processing of one: centres are the last
round's noised sums over noised counts, sizes are those noised counts, and profiles are the
centres read back in original units. Segments whose noisy size is under the minimum are
flagged, kept out of published profiles, and merged into the nearest published segment
when customers are scored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import parse_spec
from fedprofile.contract.spec import CategoricalFeature, FeatureSpec, NumericFeature
from fedprofile.errors import ContractError
from fedprofile.io.tables import check_document
from fedprofile.models.document import ModelDocument

__all__ = ["FORMAT", "VERSION", "SegmentModel", "build_profiles"]

FORMAT, VERSION = "fedprofile.segment_model", 1
_TAG_THRESHOLD = 0.12   # deviation from the overall mean, as a share of a feature's range
_MAX_TAGS = 3


def _numeric_tag(name: str, delta: float) -> str:
    return f"{'high' if delta > 0 else 'low'} {name.replace('_', ' ')}"


def _tags(spec: FeatureSpec, center: np.ndarray, overall: np.ndarray) -> list[str]:
    scored: list[tuple[float, str]] = []
    slices = spec.slices()
    for f in spec.features:
        part, ref = center[slices[f.name]], overall[slices[f.name]]
        if isinstance(f, NumericFeature):
            delta = float(part[0] - ref[0]) / f.weight
            if abs(delta) >= _TAG_THRESHOLD:
                scored.append((abs(delta), _numeric_tag(f.name, delta)))
        else:
            shares, ref_shares = part / f.weight, ref / f.weight
            j = int(np.argmax(shares - ref_shares))
            lift = float(shares[j] - ref_shares[j])
            if shares[j] >= 0.5 and lift >= _TAG_THRESHOLD:
                scored.append((lift, f"{f.name.replace('_', ' ')}: {f.levels[j]}"))
    return [tag for _, tag in sorted(scored, reverse=True)[:_MAX_TAGS]] or ["typical customers"]


def build_profiles(spec: FeatureSpec, centers: np.ndarray, sizes: np.ndarray,
                   suppressed: np.ndarray) -> list[dict[str, Any]]:
    """Per-segment profiles in original units (post-processing of the released centres)."""
    published = ~suppressed
    weights = np.clip(sizes, 0.0, None) * published
    overall = (weights @ centers / weights.sum()) if weights.sum() > 0 else centers.mean(axis=0)
    total = float(weights.sum())
    profiles = []
    slices = spec.slices()
    for j, center in enumerate(centers):
        entry: dict[str, Any] = {"segment": j, "suppressed": bool(suppressed[j])}
        if suppressed[j]:
            profiles.append(entry)
            continue
        entry["size"] = float(sizes[j])
        entry["share"] = float(max(sizes[j], 0.0) / total) if total > 0 else 0.0
        entry["numeric"] = {f.name: float(f.unscale(center[slices[f.name]])[0])
                            for f in spec.features if isinstance(f, NumericFeature)}
        entry["categorical"] = {
            f.name: {lvl: float(max(v, 0.0) / f.weight)
                     for lvl, v in zip(f.levels, center[slices[f.name]], strict=True)}
            for f in spec.features if isinstance(f, CategoricalFeature)}
        entry["tags"] = _tags(spec, center, overall)
        profiles.append(entry)
    return profiles


class SegmentModel(ModelDocument):
    """A fitted federated segment model.

    Parameters
    ----------
    spec : FeatureSpec
        The contract the model was trained under.
    centers : ndarray of shape (k, spec.dim)
        Centres in the scaled space.
    sizes : ndarray of shape (k,)
        Noisy segment sizes.
    min_segment_size : int
        Segments whose noisy size is below it are suppressed.
    privacy, params : dict
        The run's privacy record (epsilon, delta, accountant, releases) and parameters.
    partners : list of str
        Partners that took part.
    history : list of dict
        Centres after each round.

    Examples
    --------
    >>> model = SegmentModel.load("out/model.json")            # doctest: +SKIP
    >>> segments = model.predict(pd.read_csv("customers.csv"))  # doctest: +SKIP
    """

    def __init__(self, *, spec: FeatureSpec, centers: np.ndarray, sizes: np.ndarray,
                 min_segment_size: int, privacy: Mapping[str, Any],
                 params: Mapping[str, Any], partners: list[str],
                 history: list[dict[str, Any]] | None = None, created_at: str | None = None
                 ) -> None:
        self.spec = spec
        self.cluster_centers_ = np.asarray(centers, dtype=float)
        self.segment_sizes_ = np.asarray(sizes, dtype=float)
        if self.cluster_centers_.shape != (len(self.segment_sizes_), spec.dim):
            raise ContractError(f"Model centres of shape {self.cluster_centers_.shape} do not "
                                f"match {len(self.segment_sizes_)} sizes and the spec's "
                                f"dimension {spec.dim}.")
        self.min_segment_size = int(min_segment_size)
        self.suppressed_ = self.segment_sizes_ < self.min_segment_size
        self.privacy = dict(privacy)
        self.params = dict(params)
        self.partners = list(partners)
        self.history = list(history or [])
        self.created_at = created_at or datetime.now(UTC).isoformat(timespec="seconds")
        self.profiles_ = build_profiles(spec, self.cluster_centers_, self.segment_sizes_,
                                        self.suppressed_)

    @property
    def k(self) -> int:
        """Number of segments (published and suppressed)."""
        return len(self.cluster_centers_)

    @property
    def centers_original(self) -> list[dict[str, Any]]:
        """Centres in original units (numeric values and category shares)."""
        return [{**p.get("numeric", {}), **p.get("categorical", {})} if not p["suppressed"]
                else {} for p in build_profiles(self.spec, self.cluster_centers_,
                                                self.segment_sizes_,
                                                np.zeros(self.k, dtype=bool))]

    def transform(self, frame: pd.DataFrame, *, mapping: Mapping[str, str] | None = None
                  ) -> np.ndarray:
        """The contract's scaled matrix of ``frame`` (customers with dropped values removed)."""
        return transform_frame(frame, self.spec, mapping=mapping).matrix

    def predict(self, frame: pd.DataFrame, *, mapping: Mapping[str, str] | None = None,
                merge_suppressed: bool = True) -> pd.Series:
        """Segment of every row of ``frame`` (``<NA>`` where a dropped value left no vector).

        With ``merge_suppressed`` customers nearest to a suppressed segment go to the nearest
        published one.
        """
        fm = transform_frame(frame, self.spec, mapping=mapping)
        labels = self.predict_matrix(fm.matrix, merge_suppressed=merge_suppressed)
        out = pd.Series(pd.NA, index=frame.index, dtype="Int64")
        out[fm.keep] = labels
        return out

    def predict_matrix(self, matrix: np.ndarray, *, merge_suppressed: bool = True) -> np.ndarray:
        """Segment of every row of a scaled matrix."""
        from fedprofile.contract.assignment import assign

        ids = np.arange(self.k)
        if merge_suppressed and (~self.suppressed_).any():
            ids = ids[~self.suppressed_]
        return ids[assign(matrix, self.cluster_centers_[ids])]

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON document of the model."""
        return {"format": FORMAT, "version": VERSION, "created_at": self.created_at,
                "federation": self.spec.name, "k": self.k,
                "feature_names": self.spec.slot_names,
                "centers_scaled": self.cluster_centers_.tolist(),
                "centers_original": self.centers_original,
                "sizes_noisy": self.segment_sizes_.tolist(),
                "min_segment_size": self.min_segment_size,
                "suppressed": self.suppressed_.tolist(), "profiles": self.profiles_,
                "spec": self.spec.to_dict(), "spec_fingerprint": self.spec.fingerprint(),
                "privacy": self.privacy, "params": self.params, "partners": self.partners,
                "history": self.history}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, source: str = "<model>") -> SegmentModel:
        """Rebuild a model from its JSON document."""
        check_document(doc, fmt=FORMAT, version=VERSION, source=source)
        spec = parse_spec(doc["spec"], source=source)
        return cls(spec=spec, centers=np.asarray(doc["centers_scaled"]),
                   sizes=np.asarray(doc["sizes_noisy"]),
                   min_segment_size=doc["min_segment_size"], privacy=doc["privacy"],
                   params=doc["params"], partners=doc["partners"], history=doc.get("history"),
                   created_at=doc.get("created_at"))
