"""Dispatch: turning placements into attempts at sites, with failover."""
