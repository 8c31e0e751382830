"""From a partner's raw table to one row per customer, at the partner.

Order matters for privacy: identities are pseudonymised first (raw e-mail and phone
columns are dropped right there), then rows are grouped by pseudonym into customers, so
nothing downstream ever holds a raw identifier.
"""

from __future__ import annotations

import pandas as pd

from fedprofile.contract.aggregation import aggregate_customers
from fedprofile.contract.spec import FeatureSpec
from fedprofile.errors import DataError
from fedprofile.privacy.pseudonym import Pseudonymizer, pseudonymize_frame

__all__ = ["ID_COLUMN", "customer_table"]

ID_COLUMN = "pid"
"""The pseudonymous customer id column when the contract has no ``[customers]`` section."""


def customer_table(frame: pd.DataFrame, spec: FeatureSpec, *,
                   pseudonymizer: Pseudonymizer | None = None,
                   source: str = "partner table") -> pd.DataFrame:
    """Pseudonymise the contract's identity columns and aggregate rows per customer.

    Rows without any valid identifier are dropped (they cannot be grouped); the returned
    table has the customer id column (``[customers] id``, default ``pid``) and the
    aggregated columns, or the input rows when the contract declares no aggregation.

    Raises
    ------
    DataError
        If identity columns are declared but no key is configured, or a column is missing.
    """
    id_column = spec.customers.id if spec.customers else ID_COLUMN
    if spec.identity is not None:
        if pseudonymizer is None:
            raise DataError(f"The spec {spec.source} declares identity columns; the partner "
                            "needs its pseudonymisation key (node config 'key').")
        frame, _ = pseudonymize_frame(frame, pseudonymizer, email_col=spec.identity.email,
                                      phone_col=spec.identity.phone, id_col=id_column)
        frame = frame.loc[frame[id_column].notna()]
    if spec.customers is not None:
        frame = aggregate_customers(frame, spec.customers, source=source).reset_index()
    return frame
