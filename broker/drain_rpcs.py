"""The drain RPCs of the gRPC edge (`szb drain|undrain SITE`): operators only, as the audit's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from broker.api import broker_service_pb2 as pb
from broker.auth import Principal
from broker.drains import SiteDrains
from broker.rpc_errors import abort_with
from broker.rpc_fields import MAX_ID, bounded_field
from broker.service import BrokerServices, PermissionDeniedError
from broker.store import SiteDrain


def drain_to_proto(drain: SiteDrain) -> pb.SiteDrain:
    since = timestamp_pb2.Timestamp()
    since.FromDatetime(drain.since)
    return pb.SiteDrain(site=drain.site, by=drain.by, reason=drain.reason, since=since)


def drains_proto(drains: SiteDrains | None) -> list[pb.SiteDrain]:
    """The drains in force for `GetStatus` (none on a broker without them)."""
    return [] if drains is None else [drain_to_proto(d) for d in drains.current()]


class DrainRpcs:
    """`DrainSite` and `UndrainSite`, mixed into `BrokerServicer` (which gives `_principal`)."""

    drains: SiteDrains | None
    services: BrokerServices

    _principal: Callable[[grpc.aio.ServicerContext[Any, Any]], Principal]
    """Who calls (`BrokerServicer._principal`)."""

    def _operator(
        self, context: grpc.aio.ServicerContext[Any, Any], what: str, site: str, reason: str = ""
    ) -> tuple[Principal, SiteDrains]:
        """The calling operator and the drains (tenants get PERMISSION_DENIED naming `what`, and
        the audit trail records who tried it on `site`, with the `reason` they gave)."""
        caller = self._principal(context)
        if not caller.is_operator:
            denied = f"only operators may {what}"
            given = f" (reason given: {reason[:MAX_ID]!r})" if reason.strip() else ""
            # (truncated, not refused as too long: the answer stays PERMISSION_DENIED)
            self.services.refused_calls.record(
                caller, what.split()[0], site[:MAX_ID], "PERMISSION_DENIED", denied + given
            )
            raise PermissionDeniedError(denied)
        if self.drains is None:
            raise PermissionDeniedError(f"this broker keeps no drains, so it cannot {what}")
        return caller, self.drains

    def _kick(self) -> None:
        """A drain's change is placed on by the next pass, now (a scheduler elsewhere: its next)."""
        changed = getattr(self.services.dispatcher, "capacity_changed", None)
        if changed is not None:
            changed()

    async def DrainSite(
        self, request: pb.DrainSiteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DrainSiteResponse:
        try:
            caller, drains = self._operator(context, "drain a site", request.site, request.reason)
            bounded_field(request.site, "site")
            done = drains.drain(caller, request.site, request.reason)
            self._kick()
            out = pb.DrainSiteResponse(drain=drain_to_proto(done.drain), active_jobs=done.active_jobs)
            if done.replaced is not None:
                out.replaced.CopyFrom(drain_to_proto(done.replaced))
            return out
        except Exception as exc:
            await abort_with(context, exc)

    async def UndrainSite(
        self, request: pb.UndrainSiteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UndrainSiteResponse:
        try:
            caller, drains = self._operator(context, "undrain a site", request.site)
            bounded_field(request.site, "site")
            lifted = drains.undrain(caller, request.site)
            self._kick()
            out = pb.UndrainSiteResponse()
            if lifted is not None:
                out.lifted.CopyFrom(drain_to_proto(lifted))
            return out
        except Exception as exc:
            await abort_with(context, exc)


__all__ = ["DrainRpcs", "drain_to_proto", "drains_proto"]
