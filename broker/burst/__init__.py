"""Overflow bursting: the pure run / wait / burst decision and the money and route facts it uses."""

from broker.burst.decision import decide
from broker.burst.inputs import BurstInputs, demand, effective_max_wait, is_onprem
from broker.burst.money import CostSplit, TenantMoney, estimate_cost, split_cost
from broker.burst.routes import RouteState, route_refusal, route_states

__all__ = [
    "BurstInputs",
    "CostSplit",
    "RouteState",
    "TenantMoney",
    "decide",
    "demand",
    "effective_max_wait",
    "estimate_cost",
    "is_onprem",
    "route_refusal",
    "route_states",
    "split_cost",
]
