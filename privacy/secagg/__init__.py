"""Secure aggregation with distributed discrete (Skellam) noise.

Partners quantise their aggregates to integers mod ``2**bits`` (:mod:`.quantize`), add a
Skellam noise share (:mod:`.noise`, planned by :mod:`.plan`), and mask them with the SecAgg
protocol (:mod:`.partner`, :mod:`.coordinator`, messages in :mod:`.messages`); the coordinator
learns only the sum. :mod:`.simulate` runs the protocol in process.
"""

from fedprofile.privacy.secagg.coordinator import SecaggCoordinator
from fedprofile.privacy.secagg.partner import SecaggPartner
from fedprofile.privacy.secagg.plan import SecaggPlan, plan_secagg
from fedprofile.privacy.secagg.quantize import QuantizationPlan, choose_quantization

__all__ = [
    "QuantizationPlan",
    "SecaggCoordinator",
    "SecaggPartner",
    "SecaggPlan",
    "choose_quantization",
    "plan_secagg",
]
