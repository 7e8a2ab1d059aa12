"""Reading a file's bytes from the Hub: `HubReader` (ranged GETs through huggingface_hub's session, retries
with backoff and Retry-After, resume by range) and where it may follow a redirect (`check_redirect`: the
Hub's own origin or a public https origin, never a private address)."""

from __future__ import annotations

import email.utils
import io
import ipaddress
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx2
from huggingface_hub import get_session, hf_hub_url
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]  # lazy re-export

from model_cache.contract import errors

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


MAX_RETRY_AFTER_SECONDS = 120.0


@dataclass
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.25
    max_delay: float = 20.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
        backoff: float = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)  # noqa: S311 -- jitter: parallel parts do not retry in lockstep


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


MAX_REDIRECTS = 10


REDIRECT_STATUS = (301, 302, 303, 307, 308)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port


def check_redirect(hub_endpoint: str, target: str) -> None:
    """Refuse a Hub redirect that leaves for anything but a public https origin.

    The Hub's own origin is always fine; so is any target when the Hub is an http loopback endpoint (the
    offline harness: the Hub double and its CDN listener). Otherwise the target must be https and its host
    must not be, or resolve to, a loopback, link-local (the instance metadata service), private, reserved
    or multicast address: a compromised or spoofed mirror cannot turn the copier into a proxy for the VPC.
    """
    if _origin(target) == _origin(hub_endpoint) or _is_local_harness(hub_endpoint):
        return
    parts = urlsplit(target)
    if parts.scheme != "https":
        raise errors.TransferError(
            f"the Hub redirected to {parts.scheme or 'a relative'}:// ({target[:120]}); only https is followed"
        )
    host = parts.hostname or ""
    for address in _addresses(host, parts.port or 443):
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if (
            ip.is_loopback
            or ip.is_link_local
            or ip.is_private
            or ip.is_reserved
            or ip.is_multicast
            or ip.is_unspecified
        ):
            raise errors.TransferError(
                f"the Hub redirected to {host!r} ({address}), a non-public address; such redirects are never followed"
            )


def _addresses(host: str, port: int) -> list[str]:
    """The addresses a redirect's host stands for: itself when it is an IP literal, else what DNS says."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return ["127.0.0.1"]
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)})
    except (OSError, UnicodeError) as exc:
        raise errors.TransferError(f"the Hub redirected to {host!r}, which does not resolve: {exc}") from exc


def _is_local_harness(endpoint: str) -> bool:
    parts = urlsplit(endpoint)
    if parts.scheme != "http" or not parts.hostname:
        return False
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return parts.hostname == "localhost"


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class HubReader:
    """Reads byte ranges of one commit's files from the Hub's resolve URLs, with retries."""

    def __init__(
        self,
        repo_id: str,
        commit: str,
        endpoint: str,
        token: str | None,
        *,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.repo_id = repo_id
        self.commit = commit
        self.endpoint = endpoint
        self.policy = policy or RetryPolicy()
        # token=False: never fall back to a token file on disk; the token comes only from the caller.
        self._headers = build_hf_headers(token=token or False, library_name="s3-model-cache")
        self._token_given = bool(token)
        self._session = get_session()
        self.retries = 0  # how many transient faults were absorbed (visible to tests and the summary)
        self._lock = threading.Lock()
        self._download_urls: dict[str, str] = {}
        self._resolve_locks: dict[str, threading.Lock] = {}

    def url(self, path: str) -> str:
        return hf_hub_url(self.repo_id, path, revision=self.commit, endpoint=self.endpoint)

    def read(self, path: str, start: int, end: int, *, ranged: bool, on_bytes: Callable[[int], None]) -> bytes:
        """Bytes [start, end) of `path`; `ranged=False` fetches the whole file with a plain GET."""
        length = end - start
        # BytesIO.getvalue() hands over its buffer without a copy, and botocore sends `bytes` without
        # one either (a bytearray body costs a second copy per part): one part-sized buffer per part.
        buffer = io.BytesIO()
        attempt = 0
        while True:
            attempt += 1
            try:
                # Each attempt resumes at the first byte not yet in the buffer.
                self._fill(path, start, end, buffer, ranged=ranged, on_bytes=on_bytes)
                if buffer.tell() == length:
                    return buffer.getvalue()
                raise _Transient(f"the connection closed after {buffer.tell()} of {length} bytes")
            except _Transient as fault:
                if attempt >= self.policy.max_attempts:
                    raise errors.TransferError(
                        f"{path}: bytes {start}-{end - 1} still failing after {attempt} attempts ({fault.reason})"
                    ) from fault
                with self._lock:
                    self.retries += 1
                self.policy.sleep(self.policy.delay(attempt, fault.retry_after))

    def _fill(
        self,
        path: str,
        start: int,
        end: int,
        buffer: io.BytesIO,
        *,
        ranged: bool,
        on_bytes: Callable[[int], None],
    ) -> None:
        received = buffer.tell()
        headers = {**self._headers, "Accept-Encoding": "identity"}  # the file's own bytes, never re-encoded
        if ranged or received:
            headers["Range"] = f"bytes={start + received}-{end - 1}"
        if end - start == 0:
            headers.pop("Range", None)
        timeout = httpx2.Timeout(self.policy.read_timeout, connect=self.policy.connect_timeout)
        length = end - start
        try:
            url = self._download_url(path, timeout) if ranged else self._small_file_url(path)
            for _ in range(MAX_REDIRECTS):
                if not self._same_origin_as_hub(url):
                    headers.pop("authorization", None)  # the token never leaves the Hub's origin
                with self._session.stream(
                    "GET", url, headers=headers, timeout=timeout, follow_redirects=False
                ) as response:
                    location = response.headers.get("Location")
                    if response.status_code in REDIRECT_STATUS and location:
                        # A small file's GET follows its redirects here, each one checked, and remembers the
                        # last so that a retry goes straight there.
                        url = urljoin(url, location)
                        check_redirect(self.endpoint, url)
                        with self._lock:
                            self._download_urls[path] = url
                        continue
                    if response.status_code in (403, 404, 410) and url != self.url(path):
                        # A signed CDN URL can expire mid-copy: resolve it again on the next attempt.
                        self._forget_download_url(path)
                        raise _Transient(f"the download URL for {path} answered HTTP {response.status_code}")
                    self._check_status(path, response, expect_partial="Range" in headers)
                    for chunk in response.iter_raw():  # as received: re-chunking would copy every byte once more
                        size = len(chunk)
                        if received + size > length:
                            raise errors.IntegrityError(
                                f"{path}: the Hub sent more than the {end - start} bytes asked for at offset {start}"
                            )
                        buffer.write(chunk)
                        received += size
                        on_bytes(size)
                    return
            raise errors.TransferError(f"{path}: more than {MAX_REDIRECTS} redirects from the Hub")
        except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc

    def _same_origin_as_hub(self, url: str) -> bool:
        return _origin(url) == _origin(self.endpoint)

    def _download_url(self, path: str, timeout: httpx2.Timeout) -> str:
        """Where the file's bytes are served: the resolve URL's redirect target (the Hub's CDN for LFS files),
        found with one HEAD per file, so that each part costs one request and the Hub's resolve endpoint
        (rate-limited) sees one call per file, not one per part."""
        with self._lock:
            path_lock = self._resolve_locks.setdefault(path, threading.Lock())
        with path_lock:  # parallel parts of one file wait for a single resolve
            with self._lock:
                cached = self._download_urls.get(path)
            if cached is not None:
                return cached
            url = self._resolve(path, timeout)
            with self._lock:
                self._download_urls[path] = url
            return url

    def _resolve(self, path: str, timeout: httpx2.Timeout) -> str:
        url = self.url(path)
        for _ in range(MAX_REDIRECTS):
            headers = dict(self._headers)
            if not self._same_origin_as_hub(url):
                headers.pop("authorization", None)
            response = self._session.head(url, headers=headers, timeout=timeout, follow_redirects=False)
            location = response.headers.get("Location")
            if response.status_code in REDIRECT_STATUS and location:
                url = urljoin(url, location)
                check_redirect(self.endpoint, url)
                continue
            self._check_status(path, response, expect_partial=False)
            return url
        raise errors.TransferError(f"{path}: more than {MAX_REDIRECTS} redirects from the Hub")

    def _small_file_url(self, path: str) -> str:
        """Where a small file's GET starts: the redirect target an earlier attempt followed, or its resolve URL."""
        with self._lock:
            cached = self._download_urls.get(path)
        return cached if cached is not None else self.url(path)

    def _forget_download_url(self, path: str) -> None:
        with self._lock:
            self._download_urls.pop(path, None)

    def _check_status(self, path: str, response: httpx2.Response, *, expect_partial: bool) -> None:
        status = response.status_code
        if status == 206 or (status == 200 and not expect_partial):
            return
        if status in TRANSIENT_STATUS:
            raise _Transient(f"HTTP {status}", parse_retry_after(response.headers.get("Retry-After")))
        where = f"{self.repo_id}/{path}@{self.commit[:12]}"
        if status == 401 or (status == 403 and not self._token_given):
            raise errors.GatedRepo(f"the Hub refused {where} (HTTP {status}): set HF_TOKEN to a token with access")
        if status == 403:
            raise errors.AccessDenied(f"the Hub refused {where} with the token given (HTTP 403): check its access")
        if status == 404:
            raise errors.EntryNotFound(f"{where} is not at the Hub (HTTP 404): the commit may have been removed")
        if status == 416:
            raise errors.IntegrityError(f"{where} is shorter than the Hub's listing declares (HTTP 416)")
        if status == 200:
            raise errors.TransferError(f"the Hub ignored the Range request for {where}; cannot resume safely")
        raise errors.TransferError(f"the Hub answered HTTP {status} for {where}")
