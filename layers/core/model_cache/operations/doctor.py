"""`model-cache doctor --bucket B`: does a bucket the stack did not create hold the controls the cache relies on?

With `ExistingBucketName` the stack adds no policy or lifecycle to a bucket it does not own, so nothing
else checks them. Each check reads the bucket's own configuration and says what is missing and how to add
it: Block Public Access (all four), a TLS-only bucket policy covering the bucket and its objects,
versioning, a lifecycle rule aborting incomplete multipart uploads, one expiring the work prefix, one
expiring noncurrent versions, and that the work prefix is not the cache prefix. The same baseline is what
docs/tutorial/deploy.md lists; exit status 1 when any is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from model_cache.adapters.s3 import s3_error
from model_cache.contract import errors


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def check_bucket(s3: Any, bucket: str, prefix: str, work_prefix: str) -> list[Check]:
    prefix, work_prefix = prefix.strip("/"), work_prefix.strip("/")
    return [
        _public_access_block(s3, bucket),
        _tls_policy(s3, bucket),
        _versioning(s3, bucket),
        *_lifecycle(s3, bucket, work_prefix),
        Check(
            "prefixes differ",
            bool(prefix) and prefix != work_prefix and not prefix.startswith(work_prefix + "/"),
            f"cache prefix {prefix!r}, work prefix {work_prefix!r}"
            + ("" if prefix != work_prefix else ": the work files' expiry would expire the cache"),
        ),
    ]


def _public_access_block(s3: Any, bucket: str) -> Check:
    flags = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    try:
        config = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if _code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise s3_error(exc, bucket, "reading Block Public Access") from exc
        config = {}
    off = [flag for flag in flags if not config.get(flag)]
    detail = "all four settings on" if not off else f"off: {', '.join(off)} (aws s3api put-public-access-block)"
    return Check("block public access", not off, detail)


def _tls_policy(s3: Any, bucket: str) -> Check:
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as exc:
        if _code(exc) != "NoSuchBucketPolicy":
            raise s3_error(exc, bucket, "reading the bucket policy") from exc
        return Check("TLS-only policy", False, "no bucket policy: add a Deny of s3:* when aws:SecureTransport is false")
    bucket_arn = f"arn:aws:s3:::{bucket}"
    for statement in _as_list(policy.get("Statement", [])):
        secure = statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
        resources = set(_as_list(statement.get("Resource", [])))
        if (
            statement.get("Effect") == "Deny"
            and statement.get("Principal") in ("*", {"AWS": "*"})
            and "s3:*" in _as_list(statement.get("Action", []))
            and str(secure).lower() == "false"
            and {bucket_arn, f"{bucket_arn}/*"} <= resources
        ):
            return Check("TLS-only policy", True, "s3:* denied without TLS on the bucket and its objects")
    return Check(
        "TLS-only policy",
        False,
        f"no Deny of s3:* on {bucket_arn} and {bucket_arn}/* when aws:SecureTransport is false",
    )


def _versioning(s3: Any, bucket: str) -> Check:
    try:
        status = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    except ClientError as exc:
        raise s3_error(exc, bucket, "reading versioning") from exc
    return Check(
        "versioning",
        status == "Enabled",
        "enabled" if status == "Enabled" else f"{status or 'never enabled'}: a deleted or bad write cannot be undone",
    )


def _lifecycle(s3: Any, bucket: str, work_prefix: str) -> list[Check]:
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError as exc:
        if _code(exc) != "NoSuchLifecycleConfiguration":
            raise s3_error(exc, bucket, "reading the lifecycle rules") from exc
        rules = []
    enabled = [rule for rule in rules if rule.get("Status") == "Enabled"]

    def scope(rule: dict[str, Any]) -> str:
        return str(rule.get("Prefix", rule.get("Filter", {}).get("Prefix", "")))

    abort = [rule for rule in enabled if "AbortIncompleteMultipartUpload" in rule and scope(rule) == ""]
    work = [rule for rule in enabled if "Expiration" in rule and scope(rule) == f"{work_prefix}/"]
    noncurrent = [rule for rule in enabled if "NoncurrentVersionExpiration" in rule]
    return [
        Check(
            "abort incomplete uploads",
            bool(abort),
            "a bucket-wide rule aborts them" if abort else "no bucket-wide AbortIncompleteMultipartUpload rule",
        ),
        Check(
            "work files expire",
            bool(work),
            f"a rule expires {work_prefix}/" if work else f"no Expiration rule for the prefix {work_prefix}/",
        ),
        Check(
            "noncurrent versions expire",
            bool(noncurrent),
            "a rule expires them" if noncurrent else "no NoncurrentVersionExpiration rule: old versions stay forever",
        ),
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def run(s3: Any, bucket: str, prefix: str, work_prefix: str) -> list[Check]:
    """The checks, or BucketNotFound/AccessDenied when the bucket cannot be read at all."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        # HeadBucket answers a missing bucket with a bare 404 (a HEAD has no error body to say
        # NoSuchBucket): the same missing bucket every other command reports as BucketNotFound.
        if _code(exc) in ("404", "NotFound", "NoSuchBucket"):
            raise errors.BucketNotFound(
                f"bucket {bucket!r} does not exist: create it or pass the right --bucket"
            ) from exc
        raise s3_error(exc, bucket, "looking up the bucket") from exc
    return check_bucket(s3, bucket, prefix, work_prefix)
