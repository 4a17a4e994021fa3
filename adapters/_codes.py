"""Provider error codes and what dispatch does next, without importing any SDK.

`aws`, `alibaba` and `libcloud` (which meets the same codes through its EC2/ECS drivers) share
these tables. `classify` keeps the most specific match: exact code, then longest prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from adapters.base import (
    AdapterError,
    AuthError,
    CapacityError,
    ConfigError,
    NotFoundError,
    QuotaError,
    RequestError,
    SpotQuotaError,
    TransientError,
    UnsupportedError,
)
from broker.quota_scope import family_of

ErrorTable = dict[str, type[AdapterError]]
PrefixTable = tuple[tuple[str, type[AdapterError]], ...]

EC2_CODES: ErrorTable = {
    # capacity: block (site, zone, type) for a while, try the next offer
    "InsufficientInstanceCapacity": CapacityError,
    "InsufficientHostCapacity": CapacityError,
    "InsufficientReservedInstanceCapacity": CapacityError,
    "InsufficientCapacity": CapacityError,
    "UnfulfillableCapacity": CapacityError,
    "SpotMaxPriceTooLow": CapacityError,
    "InsufficientFreeAddressesInSubnet": CapacityError,
    "InsufficientVolumeCapacity": CapacityError,  # (EBS in that zone: the type elsewhere may do)
    "InsufficientAddressCapacity": CapacityError,
    "InsufficientCapacityOnHost": CapacityError,
    # not offered here
    "Unsupported": UnsupportedError,
    "UnsupportedOperation": UnsupportedError,  # e.g. an instance type its AMI does not support
    "InvalidInstanceType.NotFound": UnsupportedError,
    # quota
    "MaxSpotInstanceCountExceeded": SpotQuotaError,
    "VcpuLimitExceeded": QuotaError,
    "InstanceLimitExceeded": QuotaError,
    # transient
    "RequestLimitExceeded": TransientError,
    "Throttling": TransientError,
    "InternalError": TransientError,
    "ServerInternal": TransientError,
    "ServiceUnavailable": TransientError,
    "Unavailable": TransientError,
    "InternalFailure": TransientError,
    # auth
    "UnauthorizedOperation": AuthError,
    "AuthFailure": AuthError,
    "OptInRequired": AuthError,
    "PendingVerification": AuthError,
    "ExpiredToken": AuthError,
    "RequestExpired": AuthError,
    "InvalidClientTokenId": AuthError,
    "SignatureDoesNotMatch": AuthError,
    "MissingAuthenticationToken": AuthError,
    "Blocked": AuthError,  # (the account is blocked)
    # configuration
    "InvalidKeyPair.NotFound": ConfigError,
    "InvalidSubnetID.NotFound": ConfigError,
    "InvalidGroup.NotFound": ConfigError,
    "InvalidParameterValue": ConfigError,
    "InvalidParameterCombination": ConfigError,
    "MissingParameter": ConfigError,
    # The broker renders and boto3 base64-encodes every job's user data: a malformed one is the
    # broker's (or the site's) fault, true of every job, never one job's own request.
    "InvalidUserData.Malformed": ConfigError,
    # gone
    "InvalidInstanceID.NotFound": NotFoundError,
    "InvalidInstanceID.Malformed": NotFoundError,
}
"""Exact EC2 error codes (export-controls-and-catalog.md §5.1) and what dispatch does next."""

EC2_PREFIXES: PrefixTable = (
    ("InvalidParameter", ConfigError),
    ("InvalidAMIID.", ConfigError),
    ("AuthFailure.", AuthError),  # e.g. .ServiceLinkedRoleCreationNotPermitted (a first spot launch)
)
"""Families of codes; the longest matching prefix wins after an exact match."""

ECS_CODES: ErrorTable = {
    # stock: block (site, type, zone) for a while
    "NoStock": CapacityError,
    "OperationDenied.NoStock": CapacityError,
    "Invalid.PrivatePoolOptions.NoStock": CapacityError,
    "LackResource": CapacityError,
    "InvalidDedicatedHost.NotEnoughResource": CapacityError,
    "ResourceNotAvailable": CapacityError,
    "QuotaExceeded.PrivateIpAddress": CapacityError,  # this zone's vSwitch has no address left
    "InvalidSpotPriceLimit.LowerThanPublicPrice": CapacityError,  # (EC2's SpotMaxPriceTooLow)
    # "The specified region is in resource control, please try later": not this job's to retry
    "OperationDenied.ResourceControl": CapacityError,
    # never sold here: drop the offer
    "Zone.NotOnSale": UnsupportedError,
    "Zone.NotOpen": UnsupportedError,
    "InvalidInstanceType.ValueNotSupported": UnsupportedError,
    "InvalidInstanceType.ZoneNotSupported": UnsupportedError,
    "InvalidInstanceType.NotSupported": UnsupportedError,
    "InvalidVpcZone.NotSupported": UnsupportedError,
    "OperationDenied.ZoneNotAllowed": UnsupportedError,
    "InvalidResourceType.NotSupported": UnsupportedError,
    "InstanceType.Offline": UnsupportedError,  # retired (or none of it left)
    # quota
    "QuotaExceed.ElasticQuota": QuotaError,
    "QuotaExceed.DiskCapacity": QuotaError,
    "QuotaExceeded": QuotaError,  # "Living instances quota exceeded in this VPC."
    # transient
    "Throttling": TransientError,
    "Throttling.User": TransientError,
    "Throttling.Api": TransientError,
    "ServiceUnavailable": TransientError,
    "InternalError": TransientError,
    "IncorrectInstanceStatus": TransientError,
    "UnknownError": TransientError,
    "OperationDenied.CreatingConflict": TransientError,  # "Another Instance has been creating"
    # auth / account
    "InvalidAccessKeyId.NotFound": AuthError,
    "InvalidAccessKeyId.Inactive": AuthError,
    "SignatureDoesNotMatch": AuthError,
    "Forbidden.RAM": AuthError,
    "InvalidCredentials": AuthError,
    "MissingAccessKeyId": AuthError,
    "InvalidAccountStatus.NotEnoughBalance": AuthError,
    # Billing and account holds: no launch at the site goes through until a person acts.
    "Account.Arrearage": AuthError,
    "InsufficientBalance": AuthError,
    "PaymentMethodNotFound": AuthError,
    "RealNameAuthenticationError": AuthError,
    "SecurityRisk.3DVerification": AuthError,
    "RegionUnauthorized": AuthError,  # (one site is one region: its breaker)
    # configuration
    "InvalidImageId.NotFound": ConfigError,
    "InvalidSecurityGroupId.NotFound": ConfigError,
    "InvalidVSwitchId.NotFound": ConfigError,
    "OperationDenied.ZoneSystemCategoryNotMatch": ConfigError,
    "OperationDenied.CloudSSDNotSupported": ConfigError,
    "InvalidAction.NotFound": ConfigError,
    # the job's own request (never the site's health): only its size depends on the job
    "InvalidUserData.SizeExceeded": RequestError,
    # The broker's own base64 encoding, and a site whose image/instance type takes no UserData
    # (not VPC and I/O optimised): every job would be refused the same, so the site is out.
    "InvalidUserData.Base64FormatInvalid": ConfigError,
    "InvalidUserData.NotSupported": ConfigError,
    # gone
    "InvalidInstanceId.NotFound": NotFoundError,
}
"""Exact ECS error codes (export-controls-and-catalog.md §5.2, and the RunInstances API reference's
error codes) and what dispatch does next."""

ECS_PREFIXES: PrefixTable = (
    ("QuotaExceed.", QuotaError),
    ("QuotaExceeded.", QuotaError),  # ECS spells its quotas both ways ("QuotaExceeded" too)
    ("InvalidAccountStatus.", AuthError),
    ("Throttling.", TransientError),
    ("Forbidden.", AuthError),
    ("InvalidAccessKeyId.", AuthError),
    ("InvalidImageId.", ConfigError),
    ("InvalidParameter", ConfigError),
    ("MissingParameter", ConfigError),
)
"""Families of codes; the longest matching prefix wins after an exact match."""


GCE_CODES: ErrorTable = {
    # Compute Engine's codes as libcloud's GCE driver carries them (`GoogleBaseError.code`): an
    # operation's error code, or the `reason` of an HTTP error. A 403 is a quota or a rate
    # limit as often as a permission: its code, not its status, says which.
    "ZONE_RESOURCE_POOL_EXHAUSTED": CapacityError,
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": CapacityError,
    "QUOTA_EXCEEDED": QuotaError,
    "quotaExceeded": QuotaError,
    "rateLimitExceeded": TransientError,
    "userRateLimitExceeded": TransientError,
    "RATE_LIMIT_EXCEEDED": TransientError,
    "backendError": TransientError,
    "internalError": TransientError,
    "authError": AuthError,
    "forbidden": AuthError,
    "accessNotConfigured": AuthError,
    "notFound": NotFoundError,
    "RESOURCE_NOT_FOUND": NotFoundError,
}
"""Compute Engine error codes ("Troubleshooting resource availability errors", "Error
messages" of the Compute Engine API) and what dispatch does next."""

LIBCLOUD_TABLES: tuple[tuple[ErrorTable, PrefixTable], ...] = (
    (EC2_CODES, EC2_PREFIXES), (ECS_CODES, ECS_PREFIXES), (GCE_CODES, ()),
)
"""The code tables libcloud's drivers meet, tried in turn (`adapters.libcloud`)."""

MESSAGE_CLASSES: tuple[tuple[str, type[AdapterError]], ...] = (
    ("quota exceeded", QuotaError),  # OpenStack Nova's 403 "Quota exceeded for cores: …"
    ("rate-limited", TransientError),  # Nova's 413 overLimit "This request was rate-limited."
    ("rate limit exceeded", TransientError),
    ("no valid host was found", CapacityError),  # Nova's scheduler: no host has room for it
)
"""Words of a refusal whose driver keeps no provider code (OpenStack's): a 403 that is a quota
is not a credentials problem, and must not open the provider's auth breaker."""


def classify_message(message: str) -> type[AdapterError] | None:
    """The class a code-less refusal's words name (`MESSAGE_CLASSES`), if any."""
    lowered = message.lower()
    return next((cls for words, cls in MESSAGE_CLASSES if words in lowered), None)

EC2_QUOTA_BUCKETS: tuple[tuple[str, ...], ...] = (
    ("a", "c", "d", "h", "i", "im", "is", "m", "r", "t", "z"),  # "Standard (A, C, D, H, I, M, R, T, Z)"
    ("g", "vt"),
    ("p",),
    ("inf",),
    ("f",),
    ("x",),
    ("dl",),
    ("trn",),
    ("hpc",),
    ("u",),  # "High Memory"
)
"""The families EC2 counts under one vCPU quota ("Running On-Demand P instances", "All P Spot
Instance Requests": on-demand and spot are separate quotas over the same families)."""

EC2_FAMILY_QUOTA_CODES = frozenset(
    {"VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded"}
)
"""EC2's quota refusals that count one family bucket in one market, not the whole region."""


def ec2_quota_types(instance_type: str) -> tuple[str, ...]:
    """The families whose vCPU quota `instance_type` counts against (its own family if unknown)."""
    family = family_of(instance_type)
    return next((b for b in EC2_QUOTA_BUCKETS if family in b), (family,))


@contextmanager
def scope_ec2_quota(instance_type: str, spot: bool) -> Iterator[None]:
    """Narrow an EC2 launch's quota refusal to the family bucket and market EC2 counts it in:
    another family's (or market's) launches in that region are not refused by it."""
    try:
        yield
    except QuotaError as error:
        if error.code in EC2_FAMILY_QUOTA_CODES:
            error.types = ec2_quota_types(instance_type)
            error.market = "spot" if spot else "ondemand"
        raise


EC2_LISTING_LAG_S = 180.0
"""How long EC2 may take to list an instance RunInstances has just returned ("Eventual
consistency in the Amazon EC2 API": InvalidInstanceID.NotFound meanwhile); the dispatcher takes
such an attempt as pending, not vanished, for this long (`broker.dispatch.hung.listing_grace`)."""

EC2_USER_DATA_LIMIT = 16 * 1024
"""EC2 User Guide, "Work with instance user data": user data is limited to 16 KB in raw form,
before it is base64-encoded (boto3 encodes it)."""

ECS_TYPE_QUOTA = "QuotaExceed.ElasticQuota"
"""ECS's "no additional quota is available for the specified ECS instance type": that type's
quota in the region (its other types, and QuotaExceed.DiskCapacity's disks, are other limits)."""

ECS_USER_DATA_LIMIT = 32 * 1024
"""ECS RunInstances `UserData`: at most 32 KB of raw data before Base64 encoding."""

REQUEST_MESSAGES: tuple[tuple[str, str], ...] = (
    ("InvalidParameterValue", "user data"),
    ("InvalidParameter", "user data"),
    ("InvalidParameter", "userdata"),
)
"""(code prefix, words in the message) of generic parameter errors caused by the job's own
request: EC2 answers an oversized UserData with `InvalidParameterValue` "User data is limited
to 16384 bytes", which must not be read as a broken site configuration."""


def classify(
    code: str, exact: ErrorTable, prefixes: PrefixTable, message: str = ""
) -> type[AdapterError]:
    """The most specific class for a provider code; plain AdapterError when unknown."""
    lowered = message.lower()
    if any(code.startswith(c) and words in lowered for c, words in REQUEST_MESSAGES):
        return RequestError
    found = exact.get(code)
    if found is not None:
        return found
    matches = [(len(p), cls) for p, cls in prefixes if code.startswith(p)]
    return max(matches, key=lambda m: m[0])[1] if matches else AdapterError
