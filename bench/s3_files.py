"""A read-only S3 stand-in whose own cost is small, for `make bench` only (issue 25, item 5).

moto spends about a core serving 2 GiB (1.6-2.2 CPU-s per 2 GiB pull on 2 cores), so against moto a
wall ratio partly measures the server. This one serves a snapshot copied out of moto from plain files:
bodies go out with `os.sendfile` (no copy through Python), so the client is what the wall time measures.

It answers what the bench's clients send, as S3 does: GetObject (whole, `Range: bytes=a-b`, with or
without `versionId`, `If-Match`), HeadObject, ListObjectsV2 (prefix, delimiter, continuation) and
ListBuckets/HeadBucket; ETag, VersionId, Last-Modified, Content-Range, Accept-Ranges, and the stored
full-object CRC64NVME when asked (`x-amz-checksum-mode: ENABLED` on a whole GET). No authorization:
the bench measures transfer cost, and the offline world's IAM rules live in moto (tests/).

Run: `python -m bench.s3_files --root DIR --port N`; fill DIR with `mirror(s3, bucket, DIR)`.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import socket
import sys
import threading
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

META = ".meta.json"  # per bucket: key -> {etag, version_id, last_modified, crc64nvme}
XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


def mirror(s3: Any, bucket: str, root: Path) -> int:
    """Copy every current object of `bucket` (bytes, ETag, version id, CRC64NVME) into `root/bucket`."""
    target = root / bucket
    target.mkdir(parents=True, exist_ok=True)
    meta: dict[str, dict[str, Any]] = {}
    total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            path = target / "objects" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            response = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            with path.open("wb") as out:
                for chunk in response["Body"].iter_chunks(8 << 20):
                    out.write(chunk)
            meta[key] = {
                "etag": response["ETag"],
                "version_id": response.get("VersionId"),
                "last_modified": email.utils.format_datetime(response["LastModified"].astimezone(UTC), usegmt=True),
                "crc64nvme": response.get("ChecksumCRC64NVME"),
                "size": path.stat().st_size,
            }
            total += path.stat().st_size
    (target / META).write_text(json.dumps(meta))
    return total


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = {
            path.parent.name: json.loads(path.read_text()) for path in root.glob(f"*/{META}") if path.is_file()
        }

    def path(self, bucket: str, key: str) -> Path:
        return self.root / bucket / "objects" / key


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 and every SDK use it
    store: Store

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- routing ---------------------------------------------------------------------------------
    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        bucket, _, key = parts.path.lstrip("/").partition("/")
        return unquote(bucket), unquote(key), parse_qs(parts.query, keep_blank_values=True)

    def do_HEAD(self) -> None:
        self._object(send_body=False)

    def do_GET(self) -> None:
        bucket, key, query = self._target()
        if not bucket:
            self._xml(200, f'<ListAllMyBucketsResult xmlns="{XMLNS}"><Buckets>'
                      + "".join(f"<Bucket><Name>{escape(b)}</Name></Bucket>" for b in self.store.meta)
                      + "</Buckets></ListAllMyBucketsResult>")  # fmt: skip
        elif not key:
            self._list(bucket, query)
        else:
            self._object(send_body=True)

    # -- answers ---------------------------------------------------------------------------------
    def _error(self, status: int, code: str, message: str) -> None:
        body = f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        self._xml(status, body, head_only=self.command == "HEAD")

    def _xml(self, status: int, body: str, head_only: bool = False) -> None:
        data = ('<?xml version="1.0" encoding="UTF-8"?>' + body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head_only:
            self.wfile.write(data)

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        if bucket not in self.store.meta:
            self._error(404, "NoSuchBucket", f"no bucket {bucket}")
            return
        if "location" in query:
            self._xml(200, f'<LocationConstraint xmlns="{XMLNS}"/>')
            return
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        start_after = query.get("continuation-token", query.get("start-after", [""]))[0]
        max_keys = int(query.get("max-keys", ["1000"])[0])
        contents: list[str] = []
        prefixes: list[str] = []
        truncated, last = False, ""
        for key in sorted(self.store.meta[bucket]):
            if not key.startswith(prefix) or key <= start_after:
                continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest.split(delimiter, 1)[0] + delimiter
                if common not in prefixes:
                    prefixes.append(common)
                last = key
                continue
            entry = self.store.meta[bucket][key]
            contents.append(
                f"<Contents><Key>{escape(key)}</Key><LastModified>{_iso(entry['last_modified'])}</LastModified>"
                f"<ETag>{escape(entry['etag'])}</ETag><Size>{entry['size']}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
            last = key
        body = (
            f'<ListBucketResult xmlns="{XMLNS}"><Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>'
            f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>"
            + (f"<Delimiter>{escape(delimiter)}</Delimiter>" if delimiter else "")
            + f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
            + (f"<NextContinuationToken>{escape(last)}</NextContinuationToken>" if truncated else "")
            + "".join(contents)
            + "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes)
            + "</ListBucketResult>"
        )
        self._xml(200, body)

    def _object(self, *, send_body: bool) -> None:
        bucket, key, query = self._target()
        entry = self.store.meta.get(bucket, {}).get(key)
        if bucket not in self.store.meta:
            self._error(404, "NoSuchBucket", f"no bucket {bucket}")
            return
        if entry is None:
            self._error(404, "NoSuchKey", f"no key {key}")
            return
        version = query.get("versionId", [None])[0]
        if version is not None and version != entry["version_id"]:
            self._error(404, "NoSuchVersion", f"no version {version} of {key}")
            return
        if_match = self.headers.get("If-Match")
        if if_match is not None and if_match.strip() not in (entry["etag"], "*"):
            self._error(412, "PreconditionFailed", "If-Match")
            return
        size = int(entry["size"])
        start, end, status = 0, size - 1, 200
        requested = self.headers.get("Range")
        if requested:
            first, _, last = requested.removeprefix("bytes=").partition("-")
            if first == "":
                start = max(0, size - int(last))
            else:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "binary/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", entry["etag"])
        self.send_header("Last-Modified", entry["last_modified"])
        self.send_header("Accept-Ranges", "bytes")
        if entry["version_id"]:
            self.send_header("x-amz-version-id", entry["version_id"])
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        elif entry.get("crc64nvme") and self.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            self.send_header("x-amz-checksum-crc64nvme", entry["crc64nvme"])
            self.send_header("x-amz-checksum-type", "FULL_OBJECT")
        self.end_headers()
        if not send_body:
            return
        self.wfile.flush()
        with self.store.path(bucket, key).open("rb") as source:
            offset, left = start, length
            sock: socket.socket = self.connection
            while left > 0:
                sent = os.sendfile(sock.fileno(), source.fileno(), offset, left)
                if sent == 0:
                    raise ConnectionResetError("the client closed the connection")
                offset += sent
                left -= sent


def _iso(http_date: str) -> str:
    return email.utils.parsedate_to_datetime(http_date).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def command(root: Path, port: int) -> list[str]:
    """The server as its own process (bench.loader.server runs it), serving `root` on `port`."""
    return [sys.executable, "-m", "bench.s3_files", "--root", str(root), "--port", str(port)]


def serve(root: Path, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"store": Store(root)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = serve(args.root, args.port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    thread.join()


if __name__ == "__main__":
    main()
