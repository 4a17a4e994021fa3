from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from adapters._tags import TAG_ATTEMPT, TAG_BROKER, TAG_JOB, TAG_TOKEN
from adapters.aws import AwsAdapter, partition_for_region
from adapters.base import (
    Adapter,
    AuthError,
    CapacityError,
    ConfigError,
    NotFoundError,
    QuotaError,
    TransientError,
)
from adapters.registry import AdapterRegistry
from broker.dispatch.retry import RetryPolicy, retry_transient
from broker.model import AttemptState, SiteId
from tests.clouds.conftest import launch
from tests.doubles.moto_front import AwsFault, MotoFront, capacity_fault, throttle_fault

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def config(**extra: Any) -> dict[str, Any]:
    return {
        "region": "us-east-1",
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "image_id": "ami-12c6146b",
        "broker_id": "szb-test",
        "instance_types": [
            {
                "instance_type": "p4d.24xlarge",
                "accelerator": "A100",
                "count": 8,
                "price_per_hour": 32.7726,
                "spot_price_per_hour": 12.0,
                "zones": ["us-east-1a"],
            },
            {"instance_type": "g5.xlarge", "accelerator": "A10G", "count": 1, "price_per_hour": 1.006},
        ],
        **extra,
    }


def adapter(moto: MotoFront, **extra: Any) -> AwsAdapter:
    return AwsAdapter(SiteId("aws-us"), config(**extra), endpoint_url=moto.url)


def ec2(moto: MotoFront, region: str = "us-east-1") -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=moto.url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_is_an_adapter_and_partition_follows_region(moto: MotoFront) -> None:
    a = adapter(moto)
    assert isinstance(a, Adapter)
    assert a.partition == "aws" and a.currency == "USD"
    cn = AwsAdapter(SiteId("aws-cn"), config(region="cn-northwest-1"), endpoint_url=moto.url)
    assert cn.partition == "aws-cn" and cn.currency == "CNY"
    assert partition_for_region("cn-north-1") == "aws-cn"
    with pytest.raises(ConfigError) as err:
        AwsAdapter(SiteId("x"), config(region="cn-north-1", partition="aws"), endpoint_url=moto.url)
    assert err.value.code == "PartitionMismatch"


def test_offers_carry_catalog_and_live_spot_prices(moto: MotoFront) -> None:
    offers = adapter(moto).offers(NOW)
    by_key = {o.key: o for o in offers}
    on_demand = by_key["aws-us/us-east-1a/p4d.24xlarge/ondemand"]
    assert on_demand.price_per_hour == 32.7726 and on_demand.price_read_at is None
    spot = by_key["aws-us/us-east-1a/p4d.24xlarge/spot"]
    assert spot.price_read_at == NOW  # refreshed from describe_spot_price_history
    assert by_key["aws-us/us-east-1/g5.xlarge/ondemand"].count == 1
    static = adapter(moto, live_prices=False).offers(NOW)
    assert {o.price_per_hour for o in static if o.spot} == {12.0}


def test_submit_tags_userdata_token_and_shutdown_behaviour(moto: MotoFront) -> None:
    a = adapter(moto)
    offer = next(o for o in a.offers(NOW) if o.spot)
    iid = a.submit(launch(offer, "tok-1"))
    client = ec2(moto)
    inst = client.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags[TAG_BROKER] == "szb-test" and tags[TAG_JOB] == "job-1"
    assert tags[TAG_ATTEMPT] == "att-1" and tags[TAG_TOKEN] == "tok-1"
    assert inst["InstanceType"] == "p4d.24xlarge"
    assert inst["Placement"]["AvailabilityZone"] == "us-east-1a"
    assert inst.get("InstanceLifecycle") == "spot"
    ud = client.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    assert base64.b64decode(ud).decode().startswith("#!/bin/sh")
    behaviour = client.describe_instance_attribute(
        InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    (_, _, params) = next(c for c in moto.scenario.calls if c[0] == "RunInstances")
    assert params["ClientToken"] == "tok-1"


def test_resubmit_with_same_token_starts_one_instance(moto: MotoFront) -> None:
    a = adapter(moto)
    offer = a.offers(NOW)[0]
    first = a.submit(launch(offer, "tok-same"))
    assert a.submit(launch(offer, "tok-same")) == first
    assert moto.scenario.count("RunInstances") == 1
    assert [o.backend_id for o in a.list_owned()] == [first]


def test_status_cancel_and_list_owned(moto: MotoFront) -> None:
    a = adapter(moto)
    offer = a.offers(NOW)[0]
    iid = a.submit(launch(offer, "tok-s"))
    assert a.status(iid).state in (AttemptState.PENDING, AttemptState.RUNNING)
    foreign = ec2(moto).run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]
    other_broker = adapter(moto, broker_id="someone-else").submit(launch(offer, "tok-o"))
    owned = a.list_owned()
    assert [(o.backend_id, o.token, o.job_id) for o in owned] == [(iid, "tok-s", "job-1")]
    assert foreign["InstanceId"] != iid and other_broker != iid
    a.cancel(iid, "tok-s")
    a.cancel(iid, "tok-s")  # second call is a no-op
    assert a.status(iid).state is AttemptState.CANCELLED
    assert a.list_owned() == []


def test_terminated_without_cancel_is_lost_and_spot_interruption_is_preempted(moto: MotoFront) -> None:
    a = adapter(moto)
    offer = a.offers(NOW)[0]
    iid = a.submit(launch(offer, "tok-l"))
    ec2(moto).terminate_instances(InstanceIds=[iid])
    assert a.status(iid).state is AttemptState.LOST
    from adapters._ec2_status import status_of

    spot = {
        "State": {"Name": "terminated"},
        "StateReason": {"Code": "Server.SpotInstanceTermination", "Message": "reclaimed"},
    }
    assert status_of(spot).state is AttemptState.PREEMPTED


def test_unknown_instance_is_not_found_and_cancel_of_it_is_quiet(moto: MotoFront) -> None:
    a = adapter(moto)
    with pytest.raises(NotFoundError) as err:
        a.status("i-0123456789abcdef0")
    assert err.value.code == "InvalidInstanceID.NotFound"
    a.cancel("i-0123456789abcdef0", "t")


def test_capacity_error_keeps_code_and_is_not_retried_by_botocore(moto: MotoFront) -> None:
    moto.scenario.faults.append(capacity_fault("p4d.24xlarge", region="us-east-1"))
    a = adapter(moto)
    offer = a.offers(NOW)[0]
    with pytest.raises(CapacityError) as err:
        a.submit(launch(offer, "tok-c"))
    assert err.value.code == "InsufficientInstanceCapacity"
    assert err.value.site == "aws-us"
    assert moto.scenario.count("RunInstances") == 1  # HTTP 500, yet botocore did not retry
    g5 = next(o for o in a.offers(NOW) if o.instance_type == "g5.xlarge")
    assert a.submit(launch(g5, "tok-g5"))


def test_throttling_is_transient_and_retry_transient_gets_through(moto: MotoFront) -> None:
    moto.scenario.faults.append(throttle_fault("RunInstances", times=2))
    a = adapter(moto)
    offer = a.offers(NOW)[0]
    with pytest.raises(TransientError) as err:
        a.submit(launch(offer, "tok-t"))
    assert err.value.code == "RequestLimitExceeded"
    iid = retry_transient(
        lambda: a.submit(launch(offer, "tok-t")), policy=RetryPolicy(), sleep=lambda s: None
    )
    assert a.status(iid).state in (AttemptState.PENDING, AttemptState.RUNNING)
    assert moto.scenario.count("RunInstances") == 3


def test_bad_credentials_are_auth_errors(moto: MotoFront) -> None:
    moto.scenario.rejected_access_keys.add("wrong")
    a = adapter(moto, access_key_id="wrong", secret_access_key="wrong")
    with pytest.raises(AuthError) as err:
        a.list_owned()
    assert err.value.code == "AuthFailure"


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [
        ("VcpuLimitExceeded", 400, "QuotaError"),
        ("Unsupported", 400, "UnsupportedError"),
        ("InvalidAMIID.NotFound", 400, "ConfigError"),
        ("UnauthorizedOperation", 403, "AuthError"),
    ],
)
def test_wire_errors_map_through_the_table(moto: MotoFront, code: str, status: int, cls: str) -> None:
    moto.scenario.faults.append(AwsFault("RunInstances", code, status, "scripted"))
    a = adapter(moto)
    with pytest.raises(Exception) as err:
        a.submit(launch(a.offers(NOW)[0], "tok-w"))
    assert type(err.value).__name__ == cls and err.value.code == code  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("itype", "spot", "types"),
    [
        ("p4d.24xlarge", False, ("p",)),
        ("g5.xlarge", True, ("g", "vt")),
        ("m5.large", False, ("a", "c", "d", "h", "i", "im", "is", "m", "r", "t", "z")),
    ],
)
def test_a_vcpu_quota_refusal_names_the_family_bucket_and_market_it_counts(
    moto: MotoFront, itype: str, spot: bool, types: tuple[str, ...]
) -> None:
    """Review (issue 10): EC2 counts vCPU quotas per family bucket and market; the refusal says which,
    so one family's refusal does not block the region's other families (`broker.quota_scope`)."""
    moto.scenario.faults.append(AwsFault("RunInstances", "VcpuLimitExceeded", 400, "scripted"))
    a = adapter(moto)
    offer = next(o for o in a.offers(NOW) if o.instance_type == "g5.xlarge")
    offer = offer.model_copy(update={"instance_type": itype, "spot": spot})
    with pytest.raises(QuotaError) as err:
        a.submit(launch(offer, "tok-q"))
    assert err.value.types == types and err.value.market == ("spot" if spot else "ondemand")


def test_registry_builds_it_from_config_alone(moto: MotoFront) -> None:
    registry = AdapterRegistry.discover()
    a = registry.create("aws", SiteId("aws-us"), config(endpoint_url=moto.url))
    assert isinstance(a, AwsAdapter)
    assert a.list_owned() == []


def test_an_instance_the_broker_removed_after_its_job_ended_reads_as_its_result(moto: MotoFront) -> None:
    """Review (issue 11): after a store restored from a backup taken while a job ran, the broker
    read the instance it had removed after the job's normal end (removal tags it cancelled) as
    CANCELLED, though the job succeeded with exit 0 and its result line was on the console."""
    a = adapter(moto)
    offer = next(o for o in a.offers(NOW) if o.instance_type == "g5.xlarge")
    iid = a.submit(launch(offer, "tok-done", attempt="att-done"))
    payload = base64.b64encode(b'{"exit_code": 0, "log_tail": "done\\n"}').decode()
    moto.console[iid] = f"[cloud-init] training...\n[cloud-init] SZB-RESULT att-done {payload}\n"
    a.cancel(iid, "tok-done")  # the broker's removal of a finished instance
    status = a.status(iid)
    assert status.state is AttemptState.SUCCEEDED and status.exit_code == 0, status
    # A cancelled job that left no result stays cancelled.
    other = a.submit(launch(offer, "tok-cut", attempt="att-cut"))
    a.cancel(other, "tok-cut")
    assert a.status(other).state is AttemptState.CANCELLED


def test_a_profile_missing_at_build_fails_its_calls_until_it_is_written(
    moto: MotoFront, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapter is built without its profile (an empty aws_config), its calls name the
    profile (ConfigError, then AuthError while the profile has no keys or keys EC2 refuses),
    and it works once the files are written, without being built again."""
    files = {"AWS_CONFIG_FILE": tmp_path / "config", "AWS_SHARED_CREDENTIALS_FILE": tmp_path / "credentials"}
    for name, path in files.items():
        path.write_text("")
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    a = adapter(moto, access_key_id=None, secret_access_key=None, profile="szb-global")
    with pytest.raises(ConfigError) as missing:
        a.offers(NOW)
    assert missing.value.code == "ProfileNotFound" and "szb-global" in missing.value.message
    files["AWS_CONFIG_FILE"].write_text("[profile szb-global]\nregion = us-east-1\n")
    with pytest.raises(AuthError) as keyless:
        a.list_owned()
    assert keyless.value.code == "NoCredentials" and "szb-global" in keyless.value.message
    moto.scenario.rejected_access_keys.add("wrong")
    keys = files["AWS_SHARED_CREDENTIALS_FILE"]
    keys.write_text("[szb-global]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n")
    with pytest.raises(AuthError) as refused:
        a.list_owned()
    assert refused.value.code == "AuthFailure"
    keys.write_text("[szb-global]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    assert a.list_owned() == [] and a.offers(NOW)  # the refused keys were not kept


def test_a_running_instance_s_result_is_read_from_its_newest_console_output(moto: MotoFront) -> None:
    """Found by a held-out review of issue 11: without `Latest`, EC2 answers GetConsoleOutput with
    what was posted at the last state change, so the result line a running instance cut off from
    the broker printed was never seen: the attempt was called lost and the job run again."""
    moto.scenario.console_buffered = True
    a = adapter(moto)
    offer = next(o for o in a.offers(NOW) if o.instance_type == "g5.xlarge")
    iid = a.submit(launch(offer, "tok-cut-off", attempt="att-cut-off"))
    payload = base64.b64encode(b'{"exit_code": 0, "log_tail": "done\\n"}').decode()
    moto.console[iid] = f"[cloud-init] SZB-RESULT att-cut-off {payload}\n"
    found = a.kept_result(iid)
    assert found is not None and found.state is AttemptState.SUCCEEDED, found


def test_instances_serve_imdsv2_only_unless_the_site_allows_v1(moto: MotoFront) -> None:
    # A job's HTTP client tricked into a plain GET of 169.254.169.254 (SSRF) read the instance
    # profile's keys: instances took EC2's default, IMDSv1 on.
    client = ec2(moto)
    for extra, tokens, hops in (({}, "required", 1), ({"imds_v1": True, "imds_hop_limit": 2}, "optional", 2)):
        a = adapter(moto, **extra)
        iid = a.submit(launch(a.offers(NOW)[0], f"tok-imds-{tokens}"))
        inst = client.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert inst["MetadataOptions"]["HttpTokens"] == tokens
        assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == hops
    for bad in ({"imds_v1": "no"}, {"imds_hop_limit": 0}, {"imds_hop_limit": True}):
        with pytest.raises(ConfigError) as err:
            adapter(moto, **bad)
        assert next(iter(bad)) in str(err.value)
