"""A small real HTTP reverse proxy between boto3 and moto's server that models real S3.

boto3's `endpoint_url` points at the proxy; the proxy forwards every request to moto's URL and
can, per S3 operation:

- add latency to each request (seconds, slept before the request is forwarded);
- cap each client connection's bandwidth (bytes per second, request and response bodies);
- inject faults K times, then recover: `slowdown` answers S3's real 503 `SlowDown` XML error
  (botocore retries it), `reset` aborts the TCP connection with an RST in the middle of the
  request body (uploads) or of the response (downloads), like a dropped connection;
- fault one object, by key pattern (`key="*/refs/*"`, fnmatch) and by byte offset inside a GET
  body: `cut` ends the body cleanly after `offset` bytes (a premature end), `reset` sends an RST
  there, `flip` serves the whole body with the byte at `offset` inverted; `deny` answers S3's
  403 AccessDenied without forwarding (a write that fails for good, e.g. between
  `manifests/{commit}.json` and `refs/*`).

Bodies stream through in small pieces and are never buffered whole, so GB-scale benchmarks can go
through it. Request bodies are relayed opaquely, framed by Content-Length or chunked transfer
encoding (botocore's `aws-chunked` content encoding included). Both sides keep connections alive:
one upstream connection per client connection, one thread per client connection.

Operations are classified from method + path + query in path style (`/bucket/key`), which boto3
uses for an IP endpoint such as `http://127.0.0.1:PORT` or with
`Config(s3={"addressing_style": "path"})`; virtual-hosted requests to `<bucket>.localhost` are
classified too.

    with S3Proxy(moto_url) as proxy:
        proxy.faults.add("UploadPart", "reset", times=2)
        s3 = boto3.client("s3", endpoint_url=proxy.url)
        ...
        assert proxy.faults.fired("UploadPart") == 2

CLI: `python -m model_cache_devtools.s3proxy --upstream URL --port N [--latency S] [--bandwidth B]`
prints its URL on the first line and serves until interrupted.
"""

from __future__ import annotations

import argparse
import fnmatch
import http.client
import ipaddress
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from model_cache_devtools.servers import ConnectionTrackingServer, serve_in_thread, stop_requested, stop_serving

FaultKind = Literal["slowdown", "reset", "cut", "flip", "deny"]
ResetPhase = Literal["request", "response"]
FAULT_KINDS: tuple[str, ...] = ("slowdown", "reset", "cut", "flip", "deny")
BODY_FAULTS: tuple[str, ...] = ("cut", "flip")  # faults inside a response body, at a byte offset
ANY_OPERATION = "*"

PIECE_SIZE = 64 * 1024  # bytes relayed per read/write; also the bandwidth throttle's granularity
UPSTREAM_TIMEOUT_SECONDS = 300.0

# Per-connection headers (RFC 9110 7.6.1) that a proxy must not forward. Transfer-Encoding is
# handled separately: request bodies are relayed in their original framing.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer"}
    | {"upgrade", "expect"}
)

SLOWDOWN_BODY_TEMPLATE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    "<RequestId>{request_id}</RequestId><HostId>s3proxy</HostId></Error>"
)
DENIED_BODY_TEMPLATE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>AccessDenied</Code><Message>Access Denied</Message>"
    "<RequestId>{request_id}</RequestId><HostId>s3proxy</HostId></Error>"
)


# ---------------------------------------------------------------------------------------------
# Classifying S3 operations
# ---------------------------------------------------------------------------------------------

_BUCKET_SUBRESOURCE_GETS = {
    "uploads": "ListMultipartUploads",
    "versions": "ListObjectVersions",
    "location": "GetBucketLocation",
    "versioning": "GetBucketVersioning",
    "policy": "GetBucketPolicy",
    "lifecycle": "GetBucketLifecycleConfiguration",
    "tagging": "GetBucketTagging",
    "encryption": "GetBucketEncryption",
    "notification": "GetBucketNotificationConfiguration",
    "acl": "GetBucketAcl",
    "cors": "GetBucketCors",
}
_BUCKET_SUBRESOURCE_PUTS = {
    "versioning": "PutBucketVersioning",
    "policy": "PutBucketPolicy",
    "lifecycle": "PutBucketLifecycleConfiguration",
    "tagging": "PutBucketTagging",
    "encryption": "PutBucketEncryption",
    "notification": "PutBucketNotificationConfiguration",
    "acl": "PutBucketAcl",
    "cors": "PutBucketCors",
}


def virtual_host_bucket(host_header: str | None) -> str | None:
    """The bucket of a virtual-hosted request to `<bucket>.localhost[:port]`, else None."""
    if not host_header:
        return None
    hostname = host_header.rsplit(":", 1)[0] if not host_header.startswith("[") else host_header
    suffix = ".localhost"
    if hostname.endswith(suffix) and len(hostname) > len(suffix):
        return hostname[: -len(suffix)]
    return None


def object_key(target: str, host: str | None = None) -> str | None:
    """The object key a request addresses (path style `/bucket/key` or virtual-hosted), else None."""
    path = unquote(urlsplit(target).path)
    if virtual_host_bucket(host) is not None:
        return path.lstrip("/") or None
    segments = path.lstrip("/").split("/", 1)
    return segments[1] if len(segments) > 1 and segments[1] else None


def classify_operation(method: str, target: str, *, host: str | None = None, copy_source: bool = False) -> str:
    """The S3 API operation name of a request, from its method, request target and Host header.

    `target` is the request line's target (path and query). `copy_source` says whether the
    request carries an `x-amz-copy-source` header. Unknown shapes are named `METHOD:bucket`,
    `METHOD:object` or `METHOD:service`, so they can still be matched by a fault.
    """
    method = method.upper()
    parts = urlsplit(target)
    query = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    path = parts.path
    if path.startswith("/moto-api"):
        return "MotoApi"
    segments = path.lstrip("/").split("/", 1)
    bucket = virtual_host_bucket(host)
    if bucket is None:
        bucket = segments[0] or None
        key = segments[1] if len(segments) > 1 and segments[1] else None
    else:
        key = path.lstrip("/") or None

    if bucket is None:
        return "ListBuckets" if method == "GET" else f"{method}:service"
    if key is None:
        return _classify_bucket_operation(method, query)
    return _classify_object_operation(method, query, copy_source)


def _classify_bucket_operation(method: str, query: set[str]) -> str:
    if method == "GET":
        if "list-type" in query:
            return "ListObjectsV2"
        for subresource, name in _BUCKET_SUBRESOURCE_GETS.items():
            if subresource in query:
                return name
        return "ListObjects"
    if method == "PUT":
        for subresource, name in _BUCKET_SUBRESOURCE_PUTS.items():
            if subresource in query:
                return name
        return "CreateBucket"
    if method == "HEAD":
        return "HeadBucket"
    if method == "DELETE":
        return "DeleteBucket"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    return f"{method}:bucket"


def _classify_object_operation(method: str, query: set[str], copy_source: bool) -> str:
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPartCopy" if copy_source else "UploadPart"
        if "tagging" in query:
            return "PutObjectTagging"
        if "acl" in query:
            return "PutObjectAcl"
        return "CopyObject" if copy_source else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "POST:object"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        if "tagging" in query:
            return "DeleteObjectTagging"
        return "DeleteObject"
    if method == "GET":
        if "uploadId" in query:
            return "ListParts"
        if "attributes" in query:
            return "GetObjectAttributes"
        if "tagging" in query:
            return "GetObjectTagging"
        if "acl" in query:
            return "GetObjectAcl"
        return "GetObject"
    if method == "HEAD":
        return "HeadObject"
    return f"{method}:object"


# ---------------------------------------------------------------------------------------------
# Faults, the request log and the throttle
# ---------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """Inject `kind` on the next `times` requests of `operation` ('*' for any), then recover."""

    operation: str
    kind: FaultKind
    times: int
    phase: ResetPhase | None = None
    fired: int = 0
    key: str | None = None  # fnmatch pattern of the object key; None: any request of `operation`
    offset: int | None = None  # byte of the response body where cut/reset/flip strike; None: halfway

    @property
    def remaining(self) -> int:
        return self.times - self.fired


class FaultPlan:
    """The faults to inject, consumed in the order they were added. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
        self,
        operation: str = ANY_OPERATION,
        kind: FaultKind = "slowdown",
        times: int = 1,
        *,
        phase: ResetPhase | None = None,
        key: str | None = None,
        offset: int | None = None,
    ) -> Fault:
        """Fail the next `times` requests of `operation`.

        `phase` only applies to `reset`: `request` cuts the connection halfway through the request
        body (the upstream never sees the request), `response` after forwarding it, halfway through
        the response (the upstream has done the work, the client never hears). By default requests
        with a body are cut in the request, the others in the response.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be an int >= 1, got {times!r}")
        if not operation:
            raise ValueError("operation is empty; use '*' for any operation")
        if phase is not None and (kind != "reset" or phase not in ("request", "response")):
            raise ValueError(f"phase {phase!r} only applies to kind='reset' and is 'request' or 'response'")
        if offset is not None and (not isinstance(offset, int) or offset < 0 or kind not in (*BODY_FAULTS, "reset")):
            raise ValueError(f"offset {offset!r} must be an int >= 0, for kind 'cut', 'flip' or 'reset'")
        if kind == "reset" and offset is not None:
            phase = "response"
        fault = Fault(operation=operation, kind=kind, times=times, phase=phase, key=key, offset=offset)
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, operation: str, key: str | None = None) -> Fault | None:
        """The fault to inject into this request of `operation` (on object `key`), counting it as fired, or None."""
        with self._lock:
            for fault in self._faults:
                if fault.remaining <= 0 or fault.operation not in (operation, ANY_OPERATION):
                    continue
                if fault.key is not None and (key is None or not fnmatch.fnmatchcase(key, fault.key)):
                    continue
                fault.fired += 1
                return fault
        return None

    def fired(self, operation: str | None = None) -> int:
        """How many faults fired (for `operation` only, when given)."""
        with self._lock:
            return sum(f.fired for f in self._faults if operation is None or f.operation == operation)

    def pending(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)


@dataclass
class ProxiedRequest:
    """One request as the proxy saw it. `status` is None when the connection was reset before a
    response; bytes count body bytes relayed on the wire (chunk framing included)."""

    operation: str
    method: str
    path: str
    status: int | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    latency_seconds: float = 0.0
    throttle_seconds: float = 0.0
    fault: FaultKind | None = None


class RequestLog:
    """Every request the proxy handled, in arrival order. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[ProxiedRequest] = []

    def append(self, entry: ProxiedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def snapshot(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self._entries)

    def of(self, operation: str) -> list[ProxiedRequest]:
        return [entry for entry in self.snapshot() if entry.operation == operation]

    def operations(self) -> list[str]:
        return [entry.operation for entry in self.snapshot()]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __iter__(self) -> Iterator[ProxiedRequest]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class Throttle:
    """Paces one connection's bytes to `rate` bytes/second and reports the delay it added.

    Each piece may start only when the previous pieces have had their time on the wire, so
    N bytes take at least (N - first piece) / rate seconds; time the proxy spends working counts
    towards that, so only the remainder is slept. The clock and sleep are injectable for tests.
    """

    def __init__(
        self,
        rate: Callable[[], int | None],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._next_free: float | None = None

    def pace(self, size: int) -> float:
        """Wait until `size` more bytes may go; return the seconds slept."""
        rate = self._rate()
        if not rate:
            self._next_free = None
            return 0.0
        now = self._clock()
        delay = 0.0
        if self._next_free is not None and self._next_free > now:
            delay = self._next_free - now
            self._sleep(delay)
            now += delay
        self._next_free = now + size / rate
        return delay


# ---------------------------------------------------------------------------------------------
# The proxy
# ---------------------------------------------------------------------------------------------


class _ConnectionReset(Exception):
    """Raised inside the handler after it has aborted the client connection on purpose."""


class _MalformedRequest(Exception):
    """The client's request cannot be framed (bad Content-Length or chunk size): answered 400."""


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._upstream: http.client.HTTPConnection | None = None
        self._throttle = Throttle(lambda: self.server.proxy.bandwidth_limit)
        self._aborted = False
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            if not self._aborted:
                super().finish()
        except OSError:
            pass
        finally:
            self._close_upstream()
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the request log is the record."""

    def handle_expect_100(self) -> bool:
        # Decide per request in _proxy: a fault answers before "100 Continue", as S3 does.
        return True

    def do_GET(self) -> None:
        self._proxy()

    def do_HEAD(self) -> None:
        self._proxy()

    def do_PUT(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def do_DELETE(self) -> None:
        self._proxy()

    # -- the request ---------------------------------------------------------------------------

    def _proxy(self) -> None:
        proxy = self.server.proxy
        entry = ProxiedRequest(
            operation=classify_operation(
                self.command,
                self.path,
                host=self.headers.get("Host"),
                copy_source="x-amz-copy-source" in self.headers,
            ),
            method=self.command,
            path=self.path,
        )
        proxy.requests.append(entry)
        try:
            self._content_length()
        except _MalformedRequest as error:
            self._answer_bad_request(entry, error)
            return
        fault = proxy.faults.take(entry.operation, object_key(self.path, self.headers.get("Host")))
        entry.fault = fault.kind if fault else None
        expects_continue = self.headers.get("Expect", "").lower() == "100-continue"
        try:
            if fault is not None and fault.kind in ("slowdown", "deny"):
                self._answer_refusal(entry, expects_continue, fault.kind)
                return
            request_has_body = self._has_body()
            if fault is not None and (fault.phase or ("request" if request_has_body else "response")) == "request":
                if expects_continue:
                    self._send_continue()
                self._relay_request_body(None, entry, stop_after_half=True)
                self._abort_connection()
            if expects_continue:
                self._send_continue()
            if proxy.latency > 0:
                time.sleep(proxy.latency)
                entry.latency_seconds = proxy.latency
            response = self._forward(entry)
            self._relay_response(response, entry, fault=fault)
        except _ConnectionReset:
            self.close_connection = True
        except _MalformedRequest as error:
            self._close_upstream()
            if entry.status is None:
                self._answer_bad_request(entry, error)
        except (ConnectionError, TimeoutError, OSError, http.client.HTTPException) as error:
            self.close_connection = True
            self._close_upstream()
            if entry.status is None and not self._aborted:
                self._answer_bad_gateway(entry, error)

    def _content_length(self) -> int:
        text = self.headers.get("Content-Length")
        if text is None:
            return 0
        if not text.strip().isdigit():
            raise _MalformedRequest(f"Content-Length {text!r} is not a non-negative integer")
        return int(text)

    def _has_body(self) -> bool:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return True
        return self._content_length() > 0

    def _send_continue(self) -> None:
        self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _answer_refusal(self, entry: ProxiedRequest, expects_continue: bool, kind: str) -> None:
        """S3's 503 SlowDown (retried by botocore) or 403 AccessDenied (not retried), never forwarded."""
        if expects_continue:
            # The client waits for "100 Continue" before sending its body; it never will, so
            # nothing is left to drain. Close anyway: a client that gave up waiting may be sending.
            self.close_connection = True
        else:
            self._relay_request_body(None, entry)
        template, status, reason = (
            (SLOWDOWN_BODY_TEMPLATE, 503, "Slow Down")
            if kind == "slowdown"
            else (DENIED_BODY_TEMPLATE, 403, "Forbidden")
        )
        body = b"" if self.command == "HEAD" else template.format(request_id=uuid.uuid4().hex).encode()
        self.send_response_only(status, reason)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", uuid.uuid4().hex[:16].upper())
        if self.close_connection:
            self.send_header("Connection", "close")
        entry.status = status
        entry.bytes_out = len(body)
        self.end_headers()
        self.wfile.write(body)

    def _answer_bad_request(self, entry: ProxiedRequest, error: BaseException) -> None:
        self._answer_error(entry, 400, "Bad Request", f"s3proxy: malformed request: {error}\n")

    def _answer_bad_gateway(self, entry: ProxiedRequest, error: BaseException) -> None:
        self._answer_error(entry, 502, "Bad Gateway", f"s3proxy: request failed: {type(error).__name__}: {error}\n")

    def _answer_error(self, entry: ProxiedRequest, status: int, reason: str, message: str) -> None:
        """A plain-text error, then close: the rest of the request cannot be trusted to be framed."""
        body = message.encode()
        self.close_connection = True
        entry.status = status
        entry.bytes_out = len(body)
        try:
            self.send_response_only(status, reason)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def _end_body_early(self) -> None:
        """Close the client socket cleanly (FIN, no RST) before the body is whole: a premature end."""
        self._aborted = True
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()
        except OSError:
            pass
        raise _ConnectionReset

    def _abort_connection(self) -> None:
        """Close the client socket with an RST (SO_LINGER 0), as a dropped connection looks."""
        self._aborted = True
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        raise _ConnectionReset

    # -- upstream --------------------------------------------------------------------------------

    def _upstream_connection(self) -> http.client.HTTPConnection:
        if self._upstream is None:
            proxy = self.server.proxy
            self._upstream = http.client.HTTPConnection(
                proxy.upstream_host, proxy.upstream_port, timeout=UPSTREAM_TIMEOUT_SECONDS
            )
        return self._upstream

    def _close_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def _forward(self, entry: ProxiedRequest) -> http.client.HTTPResponse:
        has_body = self._has_body()
        # A kept-alive upstream connection may have been closed by the server meanwhile; a request
        # without a body can safely go again on a fresh connection.
        attempts = 1 if has_body else 2
        for attempt in range(attempts):
            upstream = self._upstream_connection()
            try:
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        upstream.putheader(name, value)
                upstream.endheaders()
                self._relay_request_body(upstream, entry)
                return upstream.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):
                self._close_upstream()
                if attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _relay_request_body(
        self, upstream: http.client.HTTPConnection | None, entry: ProxiedRequest, *, stop_after_half: bool = False
    ) -> None:
        """Copy the request body from the client to `upstream` (or nowhere), framing untouched."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._relay_chunked_request_body(upstream, entry, stop_after_half=stop_after_half)
            return
        remaining = self._content_length()
        if stop_after_half:
            remaining //= 2
        while remaining > 0:
            piece = self.rfile.read(min(PIECE_SIZE, remaining))
            if not piece:
                raise ConnectionError("client closed the connection in the middle of the request body")
            remaining -= len(piece)
            self._send_upstream(upstream, piece, entry)

    def _relay_chunked_request_body(
        self, upstream: http.client.HTTPConnection | None, entry: ProxiedRequest, *, stop_after_half: bool
    ) -> None:
        while True:
            size_line = self.rfile.readline(1024)
            if not size_line.endswith(b"\n"):
                raise ConnectionError("malformed or truncated chunk size line in the request body")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _MalformedRequest(f"malformed chunk size line {size_line[:40]!r}") from None
            self._send_upstream(upstream, size_line, entry)
            if stop_after_half:
                # The first chunk's header is enough to be "in the middle of the body".
                return
            if size == 0:
                while True:  # trailers, up to the empty line
                    line = self.rfile.readline(8192)
                    self._send_upstream(upstream, line, entry)
                    if line in (b"\r\n", b"\n", b""):
                        return
            remaining = size + 2  # the chunk and its CRLF
            while remaining > 0:
                piece = self.rfile.read(min(PIECE_SIZE, remaining))
                if not piece:
                    raise ConnectionError("client closed the connection in the middle of a chunk")
                remaining -= len(piece)
                self._send_upstream(upstream, piece, entry)

    def _send_upstream(self, upstream: http.client.HTTPConnection | None, piece: bytes, entry: ProxiedRequest) -> None:
        entry.throttle_seconds += self._throttle.pace(len(piece))
        entry.bytes_in += len(piece)
        if upstream is not None:
            upstream.send(piece)

    # -- the response ----------------------------------------------------------------------------

    def _relay_response(
        self, response: http.client.HTTPResponse, entry: ProxiedRequest, *, fault: Fault | None
    ) -> None:
        has_body = self.command != "HEAD" and response.status not in (204, 304) and response.status >= 200
        length_header = response.getheader("Content-Length")
        rechunk = has_body and length_header is None
        flip_at = fault.offset if fault is not None and fault.kind == "flip" else None
        cut = fault is not None and fault.kind == "cut"
        reset_halfway = fault is not None and fault.kind in ("reset", "cut")
        if reset_halfway and (not has_body or length_header == "0"):
            # Nothing to cut in half: the client sees the connection drop instead of any response.
            self._close_upstream_after(response)
            self._abort_connection()

        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            lowered = name.lower()
            if lowered in _HOP_BY_HOP or lowered == "transfer-encoding":
                continue
            self.send_header(name, value)
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        if self.close_connection:
            self.send_header("Connection", "close")
        # The log is updated before the bytes go out, so a client that has its whole answer
        # always finds the request's final figures in the log.
        entry.status = response.status
        self.end_headers()

        budget = None
        if reset_halfway and length_header:
            budget = (
                min(fault.offset, int(length_header)) if fault and fault.offset is not None else int(length_header) // 2
            )
        relayed = 0
        while has_body:
            piece = response.read(PIECE_SIZE)
            if not piece:
                break
            if budget is not None:
                piece = piece[:budget]
                budget -= len(piece)
            if flip_at is not None and relayed <= flip_at < relayed + len(piece):
                flipped = bytearray(piece)
                flipped[flip_at - relayed] ^= 0xFF
                piece = bytes(flipped)
            relayed += len(piece)
            entry.throttle_seconds += self._throttle.pace(len(piece))
            entry.bytes_out += len(piece)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if rechunk else piece)
            if reset_halfway and (budget is None or budget <= 0):
                self._close_upstream_after(response)
                if cut:
                    self._end_body_early()
                self._abort_connection()
        if rechunk:
            self.wfile.write(b"0\r\n\r\n")
        if response.will_close:
            self._close_upstream()

    def _close_upstream_after(self, response: http.client.HTTPResponse) -> None:
        # The rest of this response is never read, so the connection cannot carry another request.
        response.close()
        self._close_upstream()


class _ProxyServer(ConnectionTrackingServer):
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], proxy: S3Proxy) -> None:
        self.proxy = proxy
        super().__init__(address, _ProxyHandler)


class S3Proxy:
    """The proxy: `S3Proxy(moto_url).start()`, then point boto3's endpoint_url at `.url`.

    `latency` (seconds per request) and `bandwidth_limit` (bytes/s per client connection, None
    for unlimited) may be changed while it runs; `faults` and `requests` are thread-safe.
    """

    def __init__(self, upstream_url: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream_url must be an http://host:port URL, got {upstream_url!r}")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"upstream_url must not have a path or query, got {upstream_url!r}")
        self.upstream_url = upstream_url.rstrip("/")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.host = host
        self.port = port
        self.latency: float = 0.0
        self.bandwidth_limit: int | None = None
        self.faults = FaultPlan()
        self.requests = RequestLog()
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not running; call start() first")
        host, port = self._server.server_address[:2]
        display_host = f"[{host}]" if isinstance(host, str) and _is_ipv6(host) else host
        return f"http://{display_host!s}:{port}"

    def start(self) -> S3Proxy:
        if self._server is not None:
            raise RuntimeError("the proxy is already running")
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {self.latency}")
        if self.bandwidth_limit is not None and self.bandwidth_limit <= 0:
            raise ValueError(f"bandwidth_limit must be > 0 bytes/s or None, got {self.bandwidth_limit}")
        self._server = _ProxyServer((self.host, self.port), self)
        self._thread = serve_in_thread(self._server, "s3proxy", poll_interval=0.05)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        stop_serving(server, thread, timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> S3Proxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_cache_devtools.s3proxy",
        description="A latency/bandwidth/fault proxy in front of an S3-compatible server (moto).",
    )
    parser.add_argument("--upstream", required=True, help="the S3 server's URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--bandwidth", type=int, default=None, help="bytes/s cap per client connection")
    args = parser.parse_args(argv)
    try:
        proxy = S3Proxy(args.upstream, host=args.host, port=args.port)
        proxy.latency = args.latency
        proxy.bandwidth_limit = args.bandwidth
        proxy.start()
    except (ValueError, OSError) as error:
        print(f"s3proxy: {error}", file=sys.stderr)
        return 2
    stopped = stop_requested()
    print(proxy.url, flush=True)
    try:
        stopped.wait()
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
