"""The one Slurm error table: each error code slurmrestd reports, and what dispatch does about it."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.base import (
    AdapterError,
    AuthError,
    CapacityError,
    ConfigError,
    NotFoundError,
    QuotaError,
    TransientError,
    UnsupportedError,
)

TOKEN_ERRORS = frozenset({-1, 5005})
"""Errors a refused or expired JWT gives (and other causes too): the token is fetched again once."""

SLURM_ERRORS: Mapping[int, tuple[str, type[AdapterError]]] = {
    # code: (Slurm's name, what dispatch should do). Codes absent here become AdapterError.
    -1: ("SLURM_ERROR", TransientError),  # 22.05: bad/expired JWT *or* slurmctld unreachable
    1000: ("SLURM_UNEXPECTED_MSG_ERROR", TransientError),
    1001: ("SLURM_COMMUNICATIONS_CONNECTION_ERROR", TransientError),
    1002: ("SLURM_COMMUNICATIONS_SEND_ERROR", TransientError),
    1003: ("SLURM_COMMUNICATIONS_RECEIVE_ERROR", TransientError),
    1004: ("SLURM_COMMUNICATIONS_SHUTDOWN_ERROR", TransientError),
    1005: ("SLURM_PROTOCOL_VERSION_ERROR", ConfigError),
    1007: ("SLURM_PROTOCOL_AUTHENTICATION_ERROR", AuthError),
    1800: ("SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR", TransientError),
    1801: ("SLURMCTLD_COMMUNICATIONS_SEND_ERROR", TransientError),
    1802: ("SLURMCTLD_COMMUNICATIONS_RECEIVE_ERROR", TransientError),
    1803: ("SLURMCTLD_COMMUNICATIONS_SHUTDOWN_ERROR", TransientError),
    2000: ("ESLURM_INVALID_PARTITION_NAME", ConfigError),
    2001: ("ESLURM_DEFAULT_PARTITION_NOT_SET", ConfigError),
    2002: ("ESLURM_ACCESS_DENIED", AuthError),
    2003: ("ESLURM_JOB_MISSING_REQUIRED_PARTITION_GROUP", AuthError),
    2005: ("ESLURM_TOO_MANY_REQUESTED_CPUS", UnsupportedError),
    2006: ("ESLURM_INVALID_NODE_COUNT", UnsupportedError),
    2007: ("ESLURM_ERROR_ON_DESC_TO_RECORD_COPY", TransientError),
    2010: ("ESLURM_USER_ID_MISSING", AuthError),
    2014: ("ESLURM_REQUESTED_NODE_CONFIG_UNAVAILABLE", UnsupportedError),
    2015: ("ESLURM_REQUESTED_PART_CONFIG_UNAVAILABLE", UnsupportedError),
    2016: ("ESLURM_NODES_BUSY", CapacityError),
    2017: ("ESLURM_INVALID_JOB_ID", NotFoundError),
    2019: ("ESLURM_WRITING_TO_FILE", TransientError),
    2020: ("ESLURM_TRANSITION_STATE_NO_UPDATE", TransientError),
    2021: ("ESLURM_ALREADY_DONE", AdapterError),  # cancel treats it as done; elsewhere: report
    2027: ("ESLURM_IN_STANDBY_MODE", TransientError),
    2035: ("ESLURM_FRAGMENTATION", CapacityError),
    2036: ("ESLURM_NOT_SUPPORTED", UnsupportedError),
    2037: ("ESLURM_DISABLED", UnsupportedError),
    2044: ("ESLURM_INVALID_TASK_MEMORY", UnsupportedError),
    2045: ("ESLURM_INVALID_ACCOUNT", ConfigError),
    2050: ("ESLURM_ACCOUNTING_POLICY", QuotaError),
    2051: ("ESLURM_INVALID_TIME_LIMIT", UnsupportedError),
    2052: ("ESLURM_RESERVATION_ACCESS", AuthError),
    2066: ("ESLURM_INVALID_QOS", ConfigError),
    2068: ("ESLURM_NODE_NOT_AVAIL", CapacityError),
    2069: ("ESLURM_INVALID_CPU_COUNT", UnsupportedError),
    2070: ("ESLURM_PARTITION_NOT_AVAIL", CapacityError),
    2072: ("ESLURM_INVALID_GRES", ConfigError),
    2074: ("ESLURM_QOS_THRES", QuotaError),
    2090: ("ESLURM_INTERNAL", TransientError),
    2101: ("ESLURM_PARTITION_DOWN", CapacityError),
    2102: ("ESLURM_DUPLICATE_GRES", ConfigError),
    2105: ("ESLURM_SUBMISSIONS_DISABLED", TransientError),
    2115: ("ESLURM_INVALID_TRES", ConfigError),
    2118: ("ESLURM_MAINTENANCE_RESERVATION", CapacityError),
    2119: ("ESLURM_INVALID_GRES_TYPE", ConfigError),
    2127: ("ESLURM_ENVIRONMENT_MISSING", ConfigError),
    2131: ("ESLURM_IN_STANDBY_USE_BACKUP", TransientError),
    2134: ("ESLURM_INSUFFICIENT_GRES", CapacityError),
    5004: ("SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT", TransientError),
    # slurmctld hung up on slurmrestd: seen as a JWT expired mid-run (the client fetches it again)
    5005: ("SLURM_PROTOCOL_SOCKET_ZERO_BYTES_SENT", TransientError),
    6000: ("ESLURM_AUTH_CRED_INVALID", AuthError),
    6006: ("ESLURM_AUTH_BADARG", AuthError),
    8000: ("ESLURM_MISSING_TIME_LIMIT", ConfigError),
    9000: ("ESLURM_REST_INVALID_QUERY", ConfigError),
    9001: ("ESLURM_REST_FAIL_PARSING", ConfigError),
    9002: ("ESLURM_REST_INVALID_JOBS_DESC", ConfigError),
    9003: ("ESLURM_REST_EMPTY_RESULT", NotFoundError),
}


def error_for(site: str, code: int, message: str) -> AdapterError:
    """The AdapterError for a Slurm error code (via `SLURM_ERRORS`); `code` keeps the name."""
    name, cls = SLURM_ERRORS.get(code, (f"SLURM_{code}", AdapterError))
    return cls(site, name, f"{message} (slurm error {code})")
