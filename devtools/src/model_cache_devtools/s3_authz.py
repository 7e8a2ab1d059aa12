"""moto's S3 with AWS's authorization: every request is decided as S3 and IAM decide it on AWS.

moto ships an IAM enforcement mode (`INITIAL_NO_AUTH_ACTION_COUNT`). Read in moto 5.2.5
(`moto/iam/access_control.py`), it checks the SigV4 signature and the identity policies of IAM users
and assumed roles by Action and Resource, and says itself what it leaves out: no resource-based
policy (so no bucket policy and no explicit Deny from one), no permissions boundary, no Condition in
identity policies, one action per operation (no `s3:GetObjectVersion` for a read by version id, no
second action for a copy's source), no KMS. Those are exactly the rules our template depends on, so
the world keeps moto for what it is right about (every S3 API and its answers) and puts this layer
in front of moto's WSGI app (moto's own partial bucket-policy check, which applies a Deny whatever
its Condition, is switched off in favour of this one), the way moto_ranges gives moto S3's GET cost.
Turning moto's own mode on as well would add a signature check and nothing our policies need.

What is enforced, each from the AWS page that states it (and proved rule by rule in
tests/security/test_authz_world.py):

- Who is asking: the access key of the SigV4 `Authorization` header (or a presigned URL's
  `X-Amz-Credential`) names a registered principal; an unknown key is `InvalidAccessKeyId` (403).
- Which actions a request needs (S3 User Guide, "Required permissions for Amazon S3 API operations"):
  a GET or HEAD with `versionId` needs `s3:GetObjectVersion`, without it `s3:GetObject`; a copy needs
  the source's read action as well as `s3:PutObject`; every multipart step is `s3:PutObject` except
  `s3:AbortMultipartUpload` and `s3:ListMultipartUploadParts`; a DELETE with `versionId` needs
  `s3:DeleteObjectVersion`; each key of a DeleteObjects batch is decided on its own; ListObjects(V2)
  is `s3:ListBucket` with `s3:prefix` in the context, ListObjectVersions `s3:ListBucketVersions`.
- The decision (IAM User Guide, "Policy evaluation logic"): model_cache_devtools.iam_policy, with
  the principal's identity policies and boundary and the bucket's policy as moto stores it.
- A missing key (GetObject and HeadObject API references, "Permissions"): 404 only to a caller with
  `s3:ListBucket` on the bucket, otherwise 403. The ListBucket decision is made in the context of the
  read, which carries no `s3:prefix`: a ListBucket grant conditioned on `s3:prefix` does not count.
  That is the strict reading of the documentation (it names no prefix for this check), and code
  that works under it works under a more generous one.
- SSE-KMS (S3 User Guide, "Using server-side encryption with AWS KMS keys", "Permissions"): reading
  an object under a customer managed key needs `kms:Decrypt` on that key; writing one (PutObject,
  CreateMultipartUpload, UploadPart, a copy's destination) needs `kms:GenerateDataKey`, and a
  multipart upload also `kms:Decrypt` to create and complete it. The request context carries
  `kms:ViaService` = `s3.<region>.amazonaws.com`. The key's own policy is taken to be the default
  one (the account's IAM policies decide). HeadObject needs no KMS permission. The key is the one
  the response names, else the bucket's default encryption (moto does not record SSE-KMS on a
  completed multipart object).
- `aws:SecureTransport` is "true": the loopback HTTP stands for the TLS every AWS client uses.

- SQS `SendMessage` (and its batch form), the one other call the pipeline makes on a resource with a
  policy: the sender's identity policy and the queue's policy (`aws:PrincipalTag/...` from the
  principal's tags). Every other SQS action, and every other service, passes through to moto unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from model_cache_devtools.iam_policy import Decision, Request, evaluate

ACCOUNT = "123456789012"
REGION = "us-east-1"
KMS_VIA_S3 = f"s3.{REGION}.amazonaws.com"
# The principal the tests and the demo set up the world as: the deployer (AdministratorAccess), still
# subject to every bucket policy Deny. Its key is the one tests/conftest.py puts in the environment.
ADMIN_ACCESS_KEY = "testing"
ADMIN_ARN = f"arn:aws:iam::{ACCOUNT}:role/model-cache-deployer"
ADMINISTRATOR_ACCESS = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
# moto's Step Functions engine signs its service integrations (s3:getObject, lambda:invoke, ...) with
# this fixed key; on AWS the state machine's role makes those calls.
STEP_FUNCTIONS_ENGINE_KEY = "ak"


@dataclass
class Principal:
    """A role session as AWS sees it: its role ARN, identity policies, boundary and tags."""

    arn: str
    identity: list[dict[str, Any]]
    boundary: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def access_key_id(self) -> str:
        return "ASIA" + hashlib.sha256(self.arn.encode()).hexdigest()[:16].upper()

    def credentials(self) -> dict[str, str]:
        """What the Lambda runtime, ECS or Pod Identity hands the code: the role session's keys."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": "secret-" + self.access_key_id,
            "AWS_SESSION_TOKEN": "session-" + self.access_key_id,
        }


@dataclass(frozen=True)
class Refusal:
    principal_arn: str
    action: str
    resource: str
    reason: str


@dataclass(frozen=True)
class Needed:
    """One authorization a request needs: an action on a resource, with the request's own context keys."""

    action: str
    resource: str
    context: Mapping[str, str | list[str]] = field(default_factory=dict)


class Authorizer:
    """The registry of principals and the decisions, for one moto server in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._principals: dict[str, Principal] = {}
        self.counts: Counter[str] = Counter()
        self.refusals: list[Refusal] = []
        # The deployer also sends the tests' and the demo's requests: a tagged sender (the queue policy).
        deployer = Principal(ADMIN_ARN, [ADMINISTRATOR_ACCESS], tags={"model-cache-sender": "true"})
        self.register(deployer, access_key_id=ADMIN_ACCESS_KEY)

    def register(self, principal: Principal, *, access_key_id: str | None = None) -> Principal:
        with self._lock:
            self._principals[access_key_id or principal.access_key_id] = principal
        return principal

    def principal(self, access_key_id: str) -> Principal | None:
        with self._lock:
            return self._principals.get(access_key_id)

    def authorize(self, principal: Principal, needed: Needed, bucket: str) -> Decision:
        """IAM's decision for one needed authorization, counted (and kept, when refused)."""
        decision = self._decide(principal, needed, bucket)
        with self._lock:
            if decision.allowed:
                self.counts["authorized"] += 1
            else:
                self.counts["refused"] += 1
                self.refusals.append(Refusal(principal.arn, needed.action, needed.resource, decision.reason))
                del self.refusals[:-2000]
        return decision

    def refuse_unknown(self) -> None:
        with self._lock:
            self.counts["refused"] += 1

    def _decide(self, principal: Principal, needed: Needed, bucket: str) -> Decision:
        context = {
            "aws:SecureTransport": "true",
            "aws:PrincipalAccount": principal.arn.split(":")[4],
            **{f"aws:PrincipalTag/{key}": value for key, value in principal.tags.items()},
            **needed.context,
        }
        request = Request(principal.arn, needed.action, needed.resource, context)
        if needed.action.startswith("s3:"):
            resource_policy = bucket_policy(bucket)
        elif needed.action.startswith("sqs:"):
            resource_policy = queue_policy(needed.resource)
        else:
            resource_policy = None
        decision = evaluate(
            request,
            identity=principal.identity,
            boundary=principal.boundary,
            resource_policy=resource_policy,
            resource_account=ACCOUNT,
        )
        return decision


# ---------------------------------------------------------------------------------------------
# moto's stored state: bucket policies and default encryption
# ---------------------------------------------------------------------------------------------


def _bucket(name: str) -> Any:
    from moto.s3.models import s3_backends

    return s3_backends[ACCOUNT]["aws"].buckets.get(name)


def bucket_policy(name: str) -> dict[str, Any] | None:
    bucket = _bucket(name)
    policy = getattr(bucket, "policy", None)
    if not policy:
        return None
    loaded: dict[str, Any] = json.loads(policy)
    return loaded


def queue_policy(queue_arn: str) -> dict[str, Any] | None:
    """The queue's resource policy (its Policy attribute), as moto stores it."""
    from moto.sqs.models import sqs_backends

    queue = sqs_backends[ACCOUNT][REGION].queues.get(queue_arn.rsplit(":", 1)[-1])
    policy = getattr(queue, "policy", None)
    if not policy:
        return None
    loaded: dict[str, Any] = json.loads(policy)
    return loaded


def bucket_kms_key(name: str) -> str | None:
    """The customer managed key of the bucket's default encryption, or None (SSE-S3, or the AWS managed key)."""
    encryption = getattr(_bucket(name), "encryption", None) or {}
    rules = encryption.get("Rule", [])
    for rule in rules if isinstance(rules, list) else [rules]:
        default = rule.get("ApplyServerSideEncryptionByDefault", {})
        if default.get("SSEAlgorithm") == "aws:kms" and default.get("KMSMasterKeyID"):
            return str(default["KMSMasterKeyID"])
    return None


# ---------------------------------------------------------------------------------------------
# Which authorizations an S3 request needs
# ---------------------------------------------------------------------------------------------

_BUCKET_GET = {
    "versioning": "s3:GetBucketVersioning",
    "encryption": "s3:GetEncryptionConfiguration",
    "policy": "s3:GetBucketPolicy",
    "policyStatus": "s3:GetBucketPolicyStatus",
    "location": "s3:GetBucketLocation",
    "lifecycle": "s3:GetLifecycleConfiguration",
    "replication": "s3:GetReplicationConfiguration",
    "tagging": "s3:GetBucketTagging",
    "acl": "s3:GetBucketAcl",
    "ownershipControls": "s3:GetBucketOwnershipControls",
    "publicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "logging": "s3:GetBucketLogging",
    "object-lock": "s3:GetBucketObjectLockConfiguration",
    "cors": "s3:GetBucketCORS",
    "notification": "s3:GetBucketNotification",
    "uploads": "s3:ListBucketMultipartUploads",
    "versions": "s3:ListBucketVersions",
}
_BUCKET_PUT = {
    "versioning": "s3:PutBucketVersioning",
    "encryption": "s3:PutEncryptionConfiguration",
    "policy": "s3:PutBucketPolicy",
    "lifecycle": "s3:PutLifecycleConfiguration",
    "replication": "s3:PutReplicationConfiguration",
    "tagging": "s3:PutBucketTagging",
    "acl": "s3:PutBucketAcl",
    "ownershipControls": "s3:PutBucketOwnershipControls",
    "publicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "logging": "s3:PutBucketLogging",
    "object-lock": "s3:PutBucketObjectLockConfiguration",
    "cors": "s3:PutBucketCORS",
    "notification": "s3:PutBucketNotification",
}
_BUCKET_DELETE = {
    "policy": "s3:DeleteBucketPolicy",
    "lifecycle": "s3:PutLifecycleConfiguration",
    "encryption": "s3:PutEncryptionConfiguration",
    "replication": "s3:PutReplicationConfiguration",
    "tagging": "s3:PutBucketTagging",
    "cors": "s3:PutBucketCORS",
    "publicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "ownershipControls": "s3:PutBucketOwnershipControls",
}


@dataclass
class S3Call:
    """An S3 request as the authorizer sees it."""

    method: str
    bucket: str
    key: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def object_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}/{self.key}"

    @property
    def bucket_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}"

    @property
    def is_object_read(self) -> bool:
        reads = {"versionId", "partNumber", "response-content-type", "x-id"}
        return bool(self.key) and self.method in ("GET", "HEAD") and set(self.query) <= reads

    @property
    def kms_key_for_write(self) -> str | None:
        if self.headers.get("x-amz-server-side-encryption") == "aws:kms":
            return self.headers.get("x-amz-server-side-encryption-aws-kms-key-id") or bucket_kms_key(self.bucket)
        if self.headers.get("x-amz-server-side-encryption"):
            return None
        return bucket_kms_key(self.bucket)


def _kms(action: str, key_arn: str) -> Needed:
    return Needed(action, key_arn, {"kms:ViaService": KMS_VIA_S3, "kms:CallerAccount": ACCOUNT})


def _copy_source(call: S3Call) -> list[Needed]:
    source = call.headers.get("x-amz-copy-source")
    if not source:
        return []
    path, _, query = urllib.parse.unquote(source).lstrip("/").partition("?")
    version = urllib.parse.parse_qs(query).get("versionId")
    action = "s3:GetObjectVersion" if version else "s3:GetObject"
    bucket, _, key = path.partition("/")
    needed = [Needed(action, f"arn:aws:s3:::{bucket}/{key}")]
    source_key = bucket_kms_key(bucket)
    if source_key:
        needed.append(_kms("kms:Decrypt", source_key))
    return needed


def _delete_batch(call: S3Call) -> list[Needed]:
    needed = []
    root = ElementTree.fromstring(call.body or b"<Delete/>")  # noqa: S314 (our own client's request body)
    for entry in root.iter():
        if entry.tag.rsplit("}", 1)[-1] != "Object":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in entry}
        action = "s3:DeleteObjectVersion" if fields.get("VersionId") else "s3:DeleteObject"
        needed.append(Needed(action, f"arn:aws:s3:::{call.bucket}/{fields.get('Key', '')}"))
    return needed


def needed_for(call: S3Call) -> list[Needed]:
    """Every authorization the request needs before moto may answer it."""
    query, method = call.query, call.method
    if not call.bucket:
        return [Needed("s3:ListAllMyBuckets", "*")]
    if not call.key:
        if method in ("GET", "HEAD") and not (set(query) & set(_BUCKET_GET)):
            context = {"s3:prefix": query["prefix"]} if "prefix" in query else {}
            return [Needed("s3:ListBucket", call.bucket_arn, context)]
        if method == "GET":
            read = next(name for name in query if name in _BUCKET_GET)
            context = {"s3:prefix": query["prefix"]} if read == "versions" and "prefix" in query else {}
            return [Needed(_BUCKET_GET[read], call.bucket_arn, context)]
        if method == "PUT":
            put = next((name for name in query if name in _BUCKET_PUT), None)
            return [Needed(_BUCKET_PUT[put] if put else "s3:CreateBucket", call.bucket_arn)]
        if method == "DELETE":
            removed = next((name for name in query if name in _BUCKET_DELETE), None)
            return [Needed(_BUCKET_DELETE[removed] if removed else "s3:DeleteBucket", call.bucket_arn)]
        if method == "POST" and "delete" in query:
            return _delete_batch(call)
        return [Needed(f"s3:Unmapped{method}Bucket", call.bucket_arn)]
    versioned = "versionId" in query
    if method in ("GET", "HEAD"):
        if "uploadId" in query:
            return [Needed("s3:ListMultipartUploadParts", call.object_arn)]
        if "tagging" in query:
            return [Needed("s3:GetObjectVersionTagging" if versioned else "s3:GetObjectTagging", call.object_arn)]
        if "acl" in query:
            return [Needed("s3:GetObjectVersionAcl" if versioned else "s3:GetObjectAcl", call.object_arn)]
        if "attributes" in query:
            return [
                Needed("s3:GetObjectVersionAttributes" if versioned else "s3:GetObjectAttributes", call.object_arn),
                Needed("s3:GetObjectVersion" if versioned else "s3:GetObject", call.object_arn),
            ]
        return [Needed("s3:GetObjectVersion" if versioned else "s3:GetObject", call.object_arn)]
    if method == "PUT":
        if "tagging" in query:
            return [Needed("s3:PutObjectVersionTagging" if versioned else "s3:PutObjectTagging", call.object_arn)]
        if "acl" in query:
            return [Needed("s3:PutObjectVersionAcl" if versioned else "s3:PutObjectAcl", call.object_arn)]
        needed = [Needed("s3:PutObject", call.object_arn), *_copy_source(call)]
        key = call.kms_key_for_write
        return [*needed, _kms("kms:GenerateDataKey", key)] if key else needed
    if method == "POST":
        if "uploads" in query or "uploadId" in query:
            needed = [Needed("s3:PutObject", call.object_arn)]
            key = call.kms_key_for_write
            if key:
                needed.append(_kms("kms:Decrypt", key))
                if "uploads" in query:
                    needed.append(_kms("kms:GenerateDataKey", key))
            return needed
        if "restore" in query:
            return [Needed("s3:RestoreObject", call.object_arn)]
        return [Needed("s3:UnmappedPostObject", call.object_arn)]
    if method == "DELETE":
        if "uploadId" in query:
            return [Needed("s3:AbortMultipartUpload", call.object_arn)]
        if "tagging" in query:
            return [Needed("s3:DeleteObjectVersionTagging" if versioned else "s3:DeleteObjectTagging", call.object_arn)]
        return [Needed("s3:DeleteObjectVersion" if versioned else "s3:DeleteObject", call.object_arn)]
    return [Needed(f"s3:Unmapped{method}Object", call.object_arn)]


# ---------------------------------------------------------------------------------------------
# The WSGI layer in front of moto
# ---------------------------------------------------------------------------------------------


def _access_key(environ: Mapping[str, Any], query: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(access key id, service) from the SigV4 Authorization header or a presigned URL."""
    credential = ""
    authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
    if "Credential=" in authorization:
        credential = authorization.split("Credential=", 1)[1].split(",", 1)[0].strip()
    elif "X-Amz-Credential" in query:
        credential = query["X-Amz-Credential"]
    if not credential:
        return None, None
    parts = credential.split("/")
    return parts[0], (parts[3] if len(parts) > 3 else None)


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    headers = {
        name[5:].replace("_", "-").lower(): str(value) for name, value in environ.items() if name.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = str(environ["CONTENT_TYPE"])
    return headers


def _error(start_response: Callable[..., Any], status: str, code: str, message: str) -> list[bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{_xml_escape(message)}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()
    start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _denied_message(principal: Principal, needed: Needed, decision: Decision) -> str:
    return (
        f"User: {principal.arn} is not authorized to perform: {needed.action} on resource: "
        f'"{needed.resource}" because {decision.reason}'
    )


class AuthorizingApp:
    """WSGI middleware: decide each S3 request before moto sees it, and S3's answers that depend on
    the caller (a missing key, an SSE-KMS body) after moto answered."""

    def __init__(self, app: Callable[..., Any], authorizer: Authorizer) -> None:
        self.app = app
        self.authorizer = authorizer

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = {
            key: values[-1]
            for key, values in urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()
        }
        access_key, service = _access_key(environ, query)
        if service == "sqs":
            return self._answer_sqs(access_key or "", environ, start_response)
        if service != "s3":
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        principal = self.authorizer.principal(access_key or "")
        if principal is None:
            self.authorizer.refuse_unknown()
            return _error(
                start_response,
                "403 Forbidden",
                "InvalidAccessKeyId",
                f"The AWS Access Key Id {access_key} does not exist in our records.",
            )
        path = str(environ.get("PATH_INFO", "")).encode("latin-1").decode("utf-8")
        bucket, _, key = path.lstrip("/").partition("/")
        host = str(environ.get("HTTP_HOST", "")).split(":")[0]
        if host.endswith(".localhost"):  # virtual-hosted style
            bucket, key = host.removesuffix(".localhost"), path.lstrip("/")
        method = str(environ["REQUEST_METHOD"]).upper()
        body = b""
        if not key and method == "POST" and "delete" in query:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
        call = S3Call(method, bucket, key, query, _headers(environ), body)
        for needed in needed_for(call):
            decision = self.authorizer.authorize(principal, needed, bucket)
            if not decision.allowed:
                return _error(
                    start_response, "403 Forbidden", "AccessDenied", _denied_message(principal, needed, decision)
                )
        if not call.is_object_read:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        return self._answer_read(call, principal, environ, start_response)

    def _answer_sqs(
        self, access_key: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """SendMessage and SendMessageBatch: the sender's identity policy and the queue's policy (SQS
        Developer Guide, "Identity and access management in Amazon SQS"); every other SQS action passes."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if target:
            action = target.rsplit(".", 1)[-1]
            queue_url = str(json.loads(body or b"{}").get("QueueUrl", ""))
        else:
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            action, queue_url = form.get("Action", [""])[0], form.get("QueueUrl", [""])[0]
        if action not in ("SendMessage", "SendMessageBatch"):
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        principal = self.authorizer.principal(access_key)
        parts = queue_url.rstrip("/").split("/")
        needed = Needed("sqs:SendMessage", f"arn:aws:sqs:{REGION}:{parts[-2]}:{parts[-1]}")
        if principal is None:
            decision = Decision(False, f"the access key {access_key} does not exist")
        else:
            decision = self.authorizer.authorize(principal, needed, "")
        if decision.allowed:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        who = principal.arn if principal is not None else access_key
        message = (
            f"User: {who} is not authorized to perform: sqs:SendMessage on resource: {needed.resource} "
            f"because {decision.reason}"
        )
        payload = json.dumps({"__type": "com.amazon.coral.service#AccessDeniedException", "message": message}).encode()
        start_response(
            "403 Forbidden",
            [
                ("Content-Type", "application/x-amz-json-1.0"),
                ("x-amzn-query-error", "AccessDenied;Sender"),
                ("Content-Length", str(len(payload))),
            ],
        )
        return [payload]

    def _answer_read(
        self, call: S3Call, principal: Principal, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            captured.update(status=status, headers=headers, exc_info=exc_info)
            return lambda data: None  # moto never writes through the legacy write() callable

        result = self.app(environ, capture)
        status = str(captured.get("status", "500"))
        headers = {name.lower(): value for name, value in captured.get("headers", [])}
        refusal: tuple[Needed, Decision] | None = None
        if status.startswith("404") and _bucket(call.bucket) is not None:
            needed = Needed("s3:ListBucket", call.bucket_arn)
            decision = self.authorizer.authorize(principal, needed, call.bucket)
            if not decision.allowed:
                refusal = (needed, decision)
        elif status.startswith(("200", "206")) and call.method == "GET":
            kms_key = headers.get("x-amz-server-side-encryption-aws-kms-key-id")
            if headers.get("x-amz-server-side-encryption") != "aws:kms":
                kms_key = bucket_kms_key(call.bucket)
            if kms_key:
                needed = _kms("kms:Decrypt", kms_key)
                decision = self.authorizer.authorize(principal, needed, call.bucket)
                if not decision.allowed:
                    refusal = (needed, decision)
        if refusal is None:
            start_response(captured["status"], captured["headers"], captured.get("exc_info"))
            return result  # type: ignore[no-any-return]
        close = getattr(result, "close", None)
        if close is not None:
            close()
        needed, decision = refusal
        if call.method == "HEAD":
            start_response("403 Forbidden", [("Content-Length", "0")])
            return [b""]
        return _error(start_response, "403 Forbidden", "AccessDenied", _denied_message(principal, needed, decision))


# ---------------------------------------------------------------------------------------------
# Installing the world, and acting as a principal in this process
# ---------------------------------------------------------------------------------------------

_active: Authorizer | None = None
_acting = threading.local()
_hook_lock = threading.Lock()
_hooked = False


def enforce(server: Any) -> Authorizer:
    """Put the authorizing layer in front of a started ThreadedMotoServer; returns its Authorizer."""
    global _active
    from moto.iam.access_control import PermissionResult
    from moto.s3.models import FakeBucket

    # moto's object handlers apply a bucket policy's Deny statements themselves but ignore their
    # Condition (moto/s3/responses.py, "A bucket can deny all actions"), so the template's conditioned
    # DenyInsecureTransport would refuse every request. The decision is this layer's, made in full.
    FakeBucket.get_permission = lambda self, action, resource: PermissionResult.NEUTRAL  # type: ignore[method-assign]
    authorizer = Authorizer()
    wsgi_server = server._server
    wsgi_server.app = AuthorizingApp(wsgi_server.app, authorizer)
    _active = authorizer
    _hook_credentials()
    return authorizer


def active() -> Authorizer:
    """The Authorizer of the moto server this process enforces; the local pipeline refuses to run without one."""
    if _active is None:
        raise RuntimeError("no moto server in this process enforces authorization: start it through s3_authz.enforce")
    return _active


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    """boto3 clients created in this thread meanwhile sign as `principal` (as a Lambda's runtime would)."""
    previous = getattr(_acting, "principal", None)
    _acting.principal = principal
    try:
        yield
    finally:
        _acting.principal = previous


def _hook_credentials() -> None:
    """botocore resolves a new client's credentials through Session.get_credentials; while a thread acts
    as a principal, that answers the principal's keys (the handler code itself is unchanged)."""
    global _hooked
    with _hook_lock:
        if _hooked:
            return
        from botocore.credentials import Credentials
        from botocore.session import Session

        original = Session.get_credentials

        def get_credentials(self: Any) -> Any:
            principal = getattr(_acting, "principal", None)
            if principal is None:
                return original(self)
            keys = principal.credentials()
            return Credentials(keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"], keys["AWS_SESSION_TOKEN"])

        Session.get_credentials = get_credentials  # type: ignore[method-assign]
        _hooked = True
