"""Local scoring: a partner applies published models to its own customers. Nothing is sent."""

from __future__ import annotations

import pandas as pd

from fedprofile.contract.customers import customer_table
from fedprofile.errors import ContractError
from fedprofile.models.response_model import ResponseModel
from fedprofile.models.segment_model import SegmentModel
from fedprofile.privacy.pseudonym import Pseudonymizer

__all__ = ["score_customers"]


def score_customers(frame: pd.DataFrame, *, response: ResponseModel | None = None,
                    segments: SegmentModel | None = None,
                    pseudonymizer: Pseudonymizer | None = None,
                    id_column: str | None = None, source: str = "partner table",
                    prepared: bool = False) -> pd.DataFrame:
    """Segment and score of every customer of ``frame``, keyed by its (pseudonymous) id.

    Raw identity columns are pseudonymised and rows aggregated per customer first when the
    models' contract says so; the output holds the id, ``segment`` and ``score`` (the
    predicted value for ridge, the probability for logistic) and no raw identifier.
    ``prepared`` says ``frame`` is already one row per (pseudonymous) customer.

    Raises
    ------
    ContractError
        If no model is given or the two models were trained under different contracts.
    """
    models = [m for m in (response, segments) if m is not None]
    if not models:
        raise ContractError("Give a response model, a segment model, or both.")
    spec = models[0].spec
    if len({m.spec.fingerprint() for m in models}) > 1:
        raise ContractError("The segment and response models were trained under different "
                            "contracts; score with models of the same federation.")
    table = frame if prepared else customer_table(frame, spec, pseudonymizer=pseudonymizer,
                                                  source=source)
    key = id_column or (spec.customers.id if spec.customers else None)
    if key is None:
        key = next((c for c in ("customer_id", "pid", "id") if c in table.columns), None)
    if key is not None and key not in table.columns:
        raise ContractError(f"{source}: no id column {key!r}; name it with --id-col.")
    out = pd.DataFrame({key: table[key]} if key else {}, index=table.index)
    if segments is not None:
        out["segment"] = segments.predict(table)
    if response is not None:
        out["score"] = (response.predict_proba(table) if response.task == "logistic"
                        else response.predict(table))
    return out.reset_index(drop=True)
