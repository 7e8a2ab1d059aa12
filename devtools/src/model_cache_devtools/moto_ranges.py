"""moto's S3 with S3's cost model for a ranged GET: O(range), not O(object).

Stock moto answers `GET` with `Range: bytes=a-b` by reading the whole object out of its buffer and
slicing the bytes (`S3Response.get_object` returns `key.value`, `_handle_range_header` slices it).
A 16 MiB range of a 2 GiB object then costs 2 GiB of reads, which real S3 does not charge, and
which punishes exactly the parallel ranged reads that make a loader fast. Figures measured against
that cost model steer the work the wrong way (issue 14).

`install()` changes one thing: while `get_object` builds a response for a single-range GET, the
object's value is handed out as a `RangeReadableValue`, which knows its length and reads only the
slice that `_handle_range_header` takes. Everything else (headers, checksums, preconditions,
versions, the 416 and non-range fallbacks) stays moto's own code. Where moto would use the whole
value after all (a malformed or multi-range header, which S3 answers with the whole object), the
value is read whole, as before.

Run a patched server as its own process with `python -m model_cache_devtools.moto_ranges -p PORT`
(moto.server's own arguments); tests and the local pipeline call `install()` before they start a
ThreadedMotoServer in their process.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Any

# One byte range, as `_handle_range_header` accepts it ("bytes=a-b", "bytes=a-", "bytes=-n").
_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

_state = threading.local()
_installed = False
_install_lock = threading.Lock()


class RangeReadableValue:
    """An object's value that reads only what is sliced out of it, under the key's own lock."""

    def __init__(self, key: Any) -> None:
        self._key = key
        self._length = int(key.contentsize)

    def __len__(self) -> int:
        return self._length

    def __bool__(self) -> bool:
        return self._length > 0

    def __getitem__(self, index: slice) -> bytes:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("RangeReadableValue only supports contiguous slices")
        start, stop, _ = index.indices(self._length)
        if stop <= start:
            return b""
        with self._key.lock:
            buffer = self._key._value_buffer
            buffer.seek(start)
            return bytes(buffer.read(stop - start))

    def whole(self) -> bytes:
        return bytes(self._key.value)


def _wants_single_range(headers: Any) -> bool:
    value = headers.get("range") or headers.get("Range") or ""
    return bool(_SINGLE_RANGE.match(value.strip()))


def install() -> None:
    """Patch moto (in this process) so a single-range GET reads only its range. Idempotent."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from moto.s3.models import FakeKey
        from moto.s3.responses import S3Response

        stock_value = FakeKey.value
        stock_get_object = S3Response.get_object
        stock_handle_range = S3Response._handle_range_header
        stock_key_response = S3Response.key_response

        def value(self: Any) -> Any:
            if getattr(_state, "lazy", False):
                return RangeReadableValue(self)
            return stock_value.fget(self)  # type: ignore[attr-defined]

        def get_object(self: Any) -> Any:
            _state.lazy = _wants_single_range(self.headers)
            try:
                return stock_get_object(self)
            finally:
                _state.lazy = False

        def handle_range_header(self: Any, request: Any, response_headers: Any, response_content: Any) -> Any:
            status, headers, content = stock_handle_range(self, request, response_headers, response_content)
            if isinstance(content, RangeReadableValue):  # moto fell back to the whole object
                content = content.whole()
            return status, headers, content

        def key_response(self: Any, request: Any, full_url: str, headers: Any) -> Any:
            status, response_headers, content = stock_key_response(self, request, full_url, headers)
            if isinstance(content, RangeReadableValue):  # a non-200 answer that carried the value
                content = content.whole()
            return status, response_headers, content

        FakeKey.value = property(value, stock_value.fset)  # type: ignore[method-assign,assignment,attr-defined]
        S3Response.get_object = get_object  # type: ignore[method-assign]
        S3Response._handle_range_header = handle_range_header  # type: ignore[method-assign]
        S3Response.key_response = key_response  # type: ignore[method-assign]
        _installed = True


def main(argv: list[str] | None = None) -> None:
    """moto.server's CLI, with ranged GETs at O(range)."""
    install()
    from moto import server

    server.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
