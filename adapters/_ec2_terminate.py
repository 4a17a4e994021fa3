"""Terminating an EC2 instance EC2 does not list yet (mixed into `AwsAdapter`).

EC2's reads are eventually consistent, and TerminateInstances may answer
InvalidInstanceID.NotFound for an instance RunInstances has just returned, as DescribeInstances
does (`broker.dispatch.hung.listing_grace`). Read as gone, a cancel or a launch stopped right
after RunInstances left the instance running and billed until a reconcile pass found it.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from adapters._codes import EC2_LISTING_LAG_S
from adapters.base import NotFoundError
from broker.model import SiteId

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client
else:
    EC2Client = Any

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MOST_S = 10.0
"""Waits between TerminateInstances while EC2 does not list the instance: doubling up to this."""


class Ec2Terminate:
    """`_just_started` / `_terminate` for `AwsAdapter`: which instances this process just started."""

    site: SiteId
    _started: dict[str, float]
    """When (monotonic) RunInstances returned each instance of the last `EC2_LISTING_LAG_S`."""

    if TYPE_CHECKING:  # the adapter's own, used here

        @property
        def _create(self) -> EC2Client: ...

        def _errors(self) -> AbstractContextManager[None]: ...

    def _just_started(self, backend_id: str) -> None:
        """RunInstances returned `backend_id` now (kept while EC2 may not list it)."""
        now = time.monotonic()
        for old in [i for i, at in self._started.items() if now - at > EC2_LISTING_LAG_S]:
            del self._started[old]
        self._started[backend_id] = now

    def _terminate(self, backend_id: str) -> None:
        """TerminateInstances; an id EC2 does not know is gone, unless this process started it
        less than `EC2_LISTING_LAG_S` ago: then it is sent again until EC2 lists the instance
        (and ends it), or that time is over."""
        started = self._started.get(backend_id)
        wait_s = RETRY_FIRST_S
        while True:
            try:
                with self._errors():
                    self._create.terminate_instances(InstanceIds=[backend_id])
                return
            except NotFoundError:
                left_s = EC2_LISTING_LAG_S - (time.monotonic() - started) if started is not None else 0.0
                if left_s <= 0:
                    return
                if wait_s == RETRY_FIRST_S:
                    log.info("%s: EC2 does not list %s yet; terminating it again (up to %.0f s more)",
                             self.site, backend_id, left_s)
            time.sleep(min(wait_s, left_s))
            wait_s = min(wait_s * 2, RETRY_MOST_S)
