"""The feature contract: spec, parsing, features, per-customer aggregation, design.

The contract is what the federation declares in TOML and every partner and the coordinator
share: :class:`FeatureSpec` (:mod:`.spec`), read by :func:`load_spec` / :func:`parse_spec`
(:mod:`.parser`).
"""

from fedprofile.contract.parser import load_spec, parse_spec
from fedprofile.contract.spec import CategoricalFeature, FeatureSpec, NumericFeature

__all__ = ["CategoricalFeature", "FeatureSpec", "NumericFeature", "load_spec", "parse_spec"]
