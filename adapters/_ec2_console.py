"""An EC2 job's result read from its instance's console (mixed into `AwsAdapter`).

The bootstrap prints one SZB-RESULT line before it reports the exit to the agent endpoint: a
result whose report never arrives (the broker down, or the path to it cut) is still read here.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from adapters._codes import EC2_LISTING_LAG_S
from adapters._tags import TAG_ATTEMPT
from adapters.base import AdapterError, TransientError
from adapters.bootstrap import result_from_console
from broker.model import AttemptStatus, SiteId

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef
else:
    EC2Client = Any
    InstanceTypeDef = dict


class Ec2Console:
    """kept_result / _console_result for `AwsAdapter`, and how late EC2 lists a new instance."""

    site: SiteId
    unlisted_grace_s = EC2_LISTING_LAG_S
    """EC2 may not list an instance it has just started (`broker.dispatch.hung.listing_grace`)."""

    if TYPE_CHECKING:  # the adapter's own, used here

        @property
        def _read(self) -> EC2Client: ...

        def _errors(self) -> AbstractContextManager[None]: ...

    def kept_result(self, backend_id: str) -> AttemptStatus | None:
        """The result the instance's bootstrap printed to its console (`adapters.base.KeptResult`)."""
        with self._errors():
            resp = self._read.describe_instances(InstanceIds=[backend_id])
        found = [i for r in resp.get("Reservations", []) for i in r.get("Instances", [])]
        return self._console_result(found[0]) if found else None

    def _console_result(self, inst: InstanceTypeDef) -> AttemptStatus | None:
        """The result the bootstrap printed to the console (GetConsoleOutput), if any."""
        attempt = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}.get(TAG_ATTEMPT)
        if not attempt:
            return None
        try:
            reply = self._console_output(inst["InstanceId"])
        except TransientError:
            raise  # no evidence yet: the poll asks again
        except AdapterError:
            return None
        # botocore has already decoded the base64 `Output` of GetConsoleOutput.
        return result_from_console(str(reply.get("Output") or ""), attempt)

    def _console_output(self, instance_id: str) -> Any:
        """The newest console output: without `Latest`, EC2 answers with what was posted at the
        instance's last state change (a running instance's result line is not in it yet).
        Instance types off the Nitro hypervisor refuse `Latest`: those are read the old way."""
        try:
            with self._errors():
                return self._read.get_console_output(InstanceId=instance_id, Latest=True)
        except TransientError:
            raise
        except AdapterError:
            with self._errors():
                return self._read.get_console_output(InstanceId=instance_id)
