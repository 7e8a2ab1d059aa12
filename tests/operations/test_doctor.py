"""`model-cache doctor`: an existing bucket is checked for the controls the stack would have set.

The baseline bucket gets exactly what template.yaml gives the bucket it creates (its CacheBucket properties
and TLS statement, rendered for one deployment and applied through boto3 to moto's S3); then each control
is taken away in turn, and doctor must name it and exit 1.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import REPO_ROOT, shared_test_module, unique_name

from model_cache.cli import main as cli
from model_cache_devtools import stack_iam

pytestmark = pytest.mark.integration

security = shared_test_module("test_security_template", "tests/security/test_security_template.py")


def as_the_stack_creates_it(s3: Any) -> str:
    """A bucket with the created bucket's controls: versioning, Block Public Access, lifecycle, TLS policy."""
    name = unique_name("doctor")
    s3.create_bucket(Bucket=name)
    resources = security.template()["Resources"]
    iam = stack_iam.render_stack_iam(
        REPO_ROOT / "template.yaml",
        stack_name="doctor",
        bucket=name,
        parameters=stack_iam.SAMPLE_PARAMETERS,
        resources=stack_iam.resource_values("doctor", "doctor"),
    )
    render = iam.deployment.render
    properties = resources["CacheBucket"]["Properties"]
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=properties["VersioningConfiguration"])
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=properties["PublicAccessBlockConfiguration"])
    rules = [_lifecycle_rule(render(rule)) for rule in properties["LifecycleConfiguration"]["Rules"]]
    s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps(iam.bucket_policy))
    return name


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the S3 API's shape."""
    api: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "NoncurrentVersionExpiration" in rule:
        api["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule["NoncurrentVersionExpiration"]["NoncurrentDays"]}
    if "AbortIncompleteMultipartUpload" in rule:
        api["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    if "ExpirationInDays" in rule:
        api["Expiration"] = {"Days": rule["ExpirationInDays"]}
    return api


def doctor(bucket: str, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["doctor", "--bucket", bucket, *extra], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_bucket_with_the_stacks_controls_passes(s3: Any) -> None:
    """GIVEN a bucket configured as the stack configures the one it creates  THEN doctor passes every check."""
    code, out, err = doctor(as_the_stack_creates_it(s3))
    assert code == 0, out + err
    assert "MISSING" not in out
    assert out.count("ok     ") == 7


def _without_lifecycle_rule(rule_id: str) -> Callable[[Any, str], None]:
    def remove(s3: Any, name: str) -> None:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
        kept = [rule for rule in rules if rule["ID"] != rule_id]
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": kept})

    return remove


def _public_acls_allowed(s3: Any, name: str) -> None:
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": False,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


def _tls_deny_on_objects_only(s3: Any, name: str) -> None:
    policy = json.loads(s3.get_bucket_policy(Bucket=name)["Policy"])
    for statement in policy["Statement"]:
        if statement.get("Sid") == "DenyInsecureTransport":
            statement["Resource"] = [f"arn:aws:s3:::{name}/*"]
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))


@pytest.mark.parametrize(
    ("take_away", "missing"),
    [
        pytest.param(_public_acls_allowed, "block public access: off: BlockPublicAcls", id="block public access"),
        pytest.param(
            lambda s3, name: s3.delete_bucket_policy(Bucket=name), "TLS-only policy: no bucket policy", id="no policy"
        ),
        pytest.param(_tls_deny_on_objects_only, "TLS-only policy: no Deny", id="TLS deny misses the bucket"),
        pytest.param(
            lambda s3, name: s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"}),
            "versioning: Suspended",
            id="versioning suspended",
        ),
        pytest.param(
            _without_lifecycle_rule("abort-incomplete-multipart-uploads"),
            "abort incomplete uploads: no bucket-wide",
            id="no abort rule",
        ),
        pytest.param(
            _without_lifecycle_rule("expire-work-files"), "work files expire: no Expiration", id="no work expiry"
        ),
        pytest.param(
            _without_lifecycle_rule("expire-noncurrent-versions"),
            "noncurrent versions expire: no Noncurrent",
            id="no noncurrent expiry",
        ),
    ],
)
def test_each_missing_control_is_named_and_fails_the_check(
    s3: Any, take_away: Callable[[Any, str], None], missing: str
) -> None:
    """GIVEN the stack's bucket with one control taken away  THEN doctor names it as MISSING and exits 1."""
    name = as_the_stack_creates_it(s3)
    take_away(s3, name)
    code, out, err = doctor(name)
    assert code == 1
    assert f"MISSING  {missing}" in out, out
    assert out.count("MISSING") == 1, out
    assert "lacks 1 control" in err


def test_a_work_prefix_equal_to_the_cache_prefix_fails(s3: Any) -> None:
    """GIVEN --work-prefix equal to --prefix  THEN doctor says the work files' expiry would expire the cache."""
    code, out, _ = doctor(as_the_stack_creates_it(s3), "--prefix", "models", "--work-prefix", "models")
    assert code == 1
    assert "would expire the cache" in out
