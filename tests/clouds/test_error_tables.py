"""Guard: every provider code the reference documents is mapped to the class dispatch needs."""

from __future__ import annotations

import pytest

from adapters import alibaba, aws
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

# export-controls-and-catalog.md §5.1 (plus the expired-credential codes SkyPilot maps)
EC2_DOCUMENTED: dict[str, type[AdapterError]] = {
    "InsufficientInstanceCapacity": CapacityError,
    "InsufficientHostCapacity": CapacityError,
    "InsufficientReservedInstanceCapacity": CapacityError,
    "InsufficientCapacity": CapacityError,
    "UnfulfillableCapacity": CapacityError,
    "SpotMaxPriceTooLow": CapacityError,
    "InsufficientFreeAddressesInSubnet": CapacityError,
    "Unsupported": UnsupportedError,
    "MaxSpotInstanceCountExceeded": SpotQuotaError,  # "failover to on-demand / other region"
    "VcpuLimitExceeded": QuotaError,
    "InstanceLimitExceeded": QuotaError,
    "RequestLimitExceeded": TransientError,
    "Throttling": TransientError,
    "InternalError": TransientError,
    "ServiceUnavailable": TransientError,
    "Unavailable": TransientError,
    "ServerInternal": TransientError,
    "UnauthorizedOperation": AuthError,
    "AuthFailure": AuthError,
    "OptInRequired": AuthError,
    "PendingVerification": AuthError,
    "ExpiredToken": AuthError,
    "RequestExpired": AuthError,
    "InvalidClientTokenId": AuthError,
    "InvalidParameterValue": ConfigError,
    "InvalidParameterCombination": ConfigError,
    "InvalidParameter": ConfigError,
    "InvalidAMIID.NotFound": ConfigError,
    "InvalidAMIID.Malformed": ConfigError,
    "InvalidKeyPair.NotFound": ConfigError,
    "InvalidInstanceID.NotFound": NotFoundError,
}

# export-controls-and-catalog.md §5.2 and the task brief
ECS_DOCUMENTED: dict[str, type[AdapterError]] = {
    "NoStock": CapacityError,
    "OperationDenied.NoStock": CapacityError,
    "Invalid.PrivatePoolOptions.NoStock": CapacityError,
    "LackResource": CapacityError,
    "InvalidDedicatedHost.NotEnoughResource": CapacityError,
    "ResourceNotAvailable": CapacityError,
    "Zone.NotOnSale": UnsupportedError,
    "Zone.NotOpen": UnsupportedError,
    "InvalidInstanceType.ValueNotSupported": UnsupportedError,
    "InvalidInstanceType.ZoneNotSupported": UnsupportedError,
    "InvalidInstanceType.NotSupported": UnsupportedError,
    "InvalidVpcZone.NotSupported": UnsupportedError,
    "OperationDenied.ZoneNotAllowed": UnsupportedError,
    "OperationDenied.ZoneSystemCategoryNotMatch": ConfigError,
    "OperationDenied.CloudSSDNotSupported": ConfigError,
    "QuotaExceed.ElasticQuota": QuotaError,
    "QuotaExceed.DiskCapacity": QuotaError,
    "QuotaExceed.AnythingNew": QuotaError,
    "Throttling": TransientError,
    "Throttling.User": TransientError,
    "Throttling.Api": TransientError,
    "ServiceUnavailable": TransientError,
    "InternalError": TransientError,
    "IncorrectInstanceStatus": TransientError,
    "Forbidden.RAM": AuthError,
    "Forbidden.Whatever": AuthError,
    "InvalidAccessKeyId.NotFound": AuthError,
    "InvalidAccessKeyId.Inactive": AuthError,
    "SignatureDoesNotMatch": AuthError,
    "InvalidAccountStatus.NotEnoughBalance": AuthError,
    "InvalidParameter": ConfigError,
    "InvalidParameter.Mismatch": ConfigError,
    "InvalidImageId.NotFound": ConfigError,
    "InvalidImageId.Malformed": ConfigError,
    "InvalidInstanceId.NotFound": NotFoundError,
}


@pytest.mark.parametrize(("code", "cls"), sorted(EC2_DOCUMENTED.items()))
def test_ec2_documented_code_is_mapped(code: str, cls: type[AdapterError]) -> None:
    assert aws.classify_code(code) is cls


@pytest.mark.parametrize(("code", "cls"), sorted(ECS_DOCUMENTED.items()))
def test_ecs_documented_code_is_mapped(code: str, cls: type[AdapterError]) -> None:
    assert alibaba.classify_code(code) is cls


def test_unknown_codes_stay_adapter_errors_with_the_code() -> None:
    assert aws.classify_code("SomethingNew") is AdapterError
    assert alibaba.classify_code("SomethingNew") is AdapterError
    with pytest.raises(AdapterError) as err, alibaba.map_ecs_errors("s"):
        from Tea.exceptions import TeaException

        raise TeaException({"code": "SomethingNew", "message": "m"})
    assert type(err.value) is AdapterError and err.value.code == "SomethingNew"


def test_tables_only_use_the_error_tree() -> None:
    tree = {
        CapacityError,
        QuotaError,
        SpotQuotaError,
        TransientError,
        AuthError,
        ConfigError,
        UnsupportedError,
        RequestError,
        NotFoundError,
    }
    for table in (aws.ERROR_CODES, alibaba.ERROR_CODES):
        assert set(table.values()) <= tree
    for prefixes in (aws.ERROR_PREFIXES, alibaba.ERROR_PREFIXES):
        assert {cls for _, cls in prefixes} <= tree


def test_public_exports_are_pinned() -> None:
    from adapters import libcloud

    assert sorted(aws.__all__) == sorted(
        ["ERROR_CODES", "ERROR_PREFIXES", "AwsAdapter", "map_ec2_errors", "partition_for_region"]
    )
    assert sorted(alibaba.__all__) == sorted(
        ["AlibabaAdapter", "ERROR_CODES", "ERROR_PREFIXES", "map_ecs_errors"]
    )
    assert sorted(libcloud.__all__) == sorted(
        ["EXCEPTION_TYPES", "HTTP_STATUS", "LibcloudAdapter", "map_libcloud_errors"]
    )


def test_a_refused_user_data_blames_the_job_not_the_site() -> None:
    """EC2 answers an oversized UserData with a generic InvalidParameterValue (issue 10, obs. 4)."""
    message = "User data is limited to 16384 bytes"
    assert aws.classify_code("InvalidParameterValue", message) is RequestError
    assert aws.classify_code("InvalidParameterValue", "Invalid subnet") is ConfigError
    assert aws.classify_code("InvalidUserData.Malformed") is ConfigError  # the broker's encoding
    assert alibaba.classify_code("InvalidUserData.SizeExceeded") is RequestError
    # The site's image/instance type, or the broker's encoding: every job alike, never one job's.
    assert alibaba.classify_code("InvalidUserData.NotSupported") is ConfigError
    assert alibaba.classify_code("InvalidUserData.Base64FormatInvalid") is ConfigError
    assert alibaba.classify_code("InvalidParameter", "The parameter UserData is invalid") is RequestError


# Refusals RunInstances' own API references document beyond the reference's summary (review of
# issues 4 and 6): ECS "RunInstances" error codes, EC2 "Error codes for the Amazon EC2 API".
# Unmapped, each failed the attempt as an unknown code: a region's quota cost the job one attempt
# per offer there (the job gave up with the next region untried) and a billing hold never opened
# the provider's breaker.
ECS_RUN_INSTANCES: dict[str, type[AdapterError]] = {
    "QuotaExceeded": QuotaError,  # "Living instances quota exceeded in this VPC."
    "QuotaExceeded.Whatever": QuotaError,
    "QuotaExceeded.PrivateIpAddress": CapacityError,  # this zone's vSwitch is full: try another
    "Account.Arrearage": AuthError,  # billing, like InvalidAccountStatus.NotEnoughBalance
    "InsufficientBalance": AuthError,
    "InvalidAccountStatus.Whatever": AuthError,
    "PaymentMethodNotFound": AuthError,
    "RealNameAuthenticationError": AuthError,
    "SecurityRisk.3DVerification": AuthError,
    "RegionUnauthorized": AuthError,
    "InstanceType.Offline": UnsupportedError,  # retired, or none left of it
    "InvalidSpotPriceLimit.LowerThanPublicPrice": CapacityError,  # EC2's SpotMaxPriceTooLow
    "OperationDenied.CreatingConflict": TransientError,  # "Another Instance has been creating"
    "OperationDenied.ResourceControl": CapacityError,  # "region is in resource control, try later"
}
EC2_RUN_INSTANCES: dict[str, type[AdapterError]] = {
    "InsufficientCapacityOnHost": CapacityError,
    "UnsupportedOperation": UnsupportedError,  # e.g. an instance type the AMI does not support
    "MissingParameter": ConfigError,
    "AuthFailure.ServiceLinkedRoleCreationNotPermitted": AuthError,
}


@pytest.mark.parametrize(("code", "cls"), sorted(ECS_RUN_INSTANCES.items()))
def test_ecs_run_instances_refusals_are_mapped(code: str, cls: type[AdapterError]) -> None:
    assert alibaba.classify_code(code) is cls


@pytest.mark.parametrize(("code", "cls"), sorted(EC2_RUN_INSTANCES.items()))
def test_ec2_run_instances_refusals_are_mapped(code: str, cls: type[AdapterError]) -> None:
    assert aws.classify_code(code) is cls
