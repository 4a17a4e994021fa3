"""Fair share of scarce on-prem capacity: tenants' shares and quotas, usage, and the queue order.

Pure core: the planner gathers usage and the queue, `order` returns it sorted with each
job's standing; the simulator calls the same functions.
"""

from broker.fairshare.order import (
    QueuedWork,
    Standing,
    TenantState,
    held_back,
    order,
    ordinal,
    share_ratios,
    standings,
)
from broker.fairshare.shares import (
    BatchIdentity,
    Share,
    batch_account,
    lowered_priority,
    onprem_partitions,
    partition_units,
    priority_refusal,
    resolve_share,
)
from broker.fairshare.usage import Demand, Interval, UsageLedger, charge_factor, usage

__all__ = [
    "BatchIdentity",
    "Demand",
    "Interval",
    "QueuedWork",
    "Share",
    "Standing",
    "TenantState",
    "UsageLedger",
    "batch_account",
    "charge_factor",
    "held_back",
    "lowered_priority",
    "onprem_partitions",
    "order",
    "ordinal",
    "partition_units",
    "priority_refusal",
    "resolve_share",
    "share_ratios",
    "standings",
    "usage",
]
