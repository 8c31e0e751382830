"""The exception hierarchy shared by every fedprofile component.

Messages name the parameter, the allowed values, what was received and the fix.
Values derived from partner data (rows, identifiers, counts, norms) never appear in
an exception that can leave a partner node.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceededError",
    "ContractError",
    "DataError",
    "FedprofileError",
    "PolicyRefusedError",
    "PrivacyWarning",
    "ProtocolError",
    "SecureAggregationRefusedError",
    "UnsupportedEventError",
]


class FedprofileError(Exception):
    """Base class of every error fedprofile raises on purpose.

    ``local_detail`` is text for the partner's own eyes only (its log, its terminal), such as
    a database driver's message that may quote a value; it never goes into a reply.
    """

    def __init__(self, *args: object, local_detail: str = "") -> None:
        super().__init__(*args)
        self.local_detail = local_detail


class ContractError(FedprofileError, ValueError):
    """The feature contract (spec TOML, column mapping) or a run parameter is invalid."""


class DataError(FedprofileError, ValueError):
    """A partner's data file is missing, unreadable or does not fit the contract."""


class ProtocolError(FedprofileError, ValueError):
    """A message does not follow the server-client protocol (keys, types, shapes, finiteness)."""


class PolicyRefusedError(FedprofileError):
    """A partner refused an instruction because it would break the partner's privacy policy."""


class SecureAggregationRefusedError(PolicyRefusedError):
    """A partner's policy does not let it take part in this run's secure aggregation.

    The partner demands that it add all the noise itself (``noise = "partner"``).
    """


class BudgetExceededError(FedprofileError, ValueError):
    """A privacy spend was refused because it would exceed a budget; nothing was recorded."""


class UnsupportedEventError(FedprofileError, ValueError):
    """An accountant was given a privacy event it cannot compose."""


class PrivacyWarning(RuntimeWarning):
    """A run or setting weakens the privacy guarantee (for example a non-private run)."""
