"""Request executions in flight, counted exactly across concurrent request Lambdas.

`MaxExecutionsInFlight` was checked by counting RUNNING executions and then starting one; two request
Lambdas (reserved concurrency 5) could both count limit-1 and both start. Two facts make a plain count
unfit: the check and the start are separate calls, and ListExecutions is eventually consistent ("the
results are best effort and may not reflect very recent updates", Step Functions API reference), so an
execution started a moment ago may not be listed yet.

So a request takes a slot in a ledger before it starts its execution: one S3 object,
`{work_prefix}/requests/in-flight.json`, rewritten only with a conditional PUT on the ETag it read
(If-Match; If-None-Match when absent). Two Lambdas that read the same version cannot both write it: the
second gets 412 and counts again. The slots in force are those whose execution is listed RUNNING, and
those younger than `LISTING_GRACE_SECONDS` (started, maybe not listed yet) unless DescribeExecution says
they ended (an ended execution never runs again, so that answer is final); the count is the union of
those with every listed RUNNING execution (the schedule's, an operator's), so it never falls below the
truth. A slot of an execution that ended leaves at the next count; one whose start failed is given back.

Each slot records its sender's principal (the SenderId before ':'), and a sender may hold at most
`sender_share(limit)` slots - half of them, at least one - so one sender's flood cannot hold every slot
while others wait.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from model_cache.contract import errors, layout
from model_cache.pipeline.publish import Conflict, get_with_etag, put_bytes

# Longer than Step Functions' listing lag (seconds in practice), far shorter than any copy run.
LISTING_GRACE_SECONDS = 300.0
CONDITIONAL_ATTEMPTS = 25

RunningNames = Callable[[], set[str]]
Ended = Callable[[str], bool]


def ledger_key(work_prefix: str) -> str:
    return layout.inflight_ledger_key(work_prefix)


def sender_share(limit: int) -> int:
    """The most slots one sender may hold: half (rounded down) of the limit, and at least one."""
    return max(1, limit // 2)


def principal(sender: str | None) -> str:
    """The IAM principal of an SQS SenderId: a role's sessions (`AROA...:session`) are one sender."""
    return (sender or "").split(":", 1)[0]


@dataclass(frozen=True)
class Slot:
    name: str  # the execution's name
    sender: str  # the principal that asked
    taken_at: str  # ISO 8601 UTC


class Full(errors.TooManyExecutions):
    """Every slot is taken, or the sender holds its share; `name_in_flight` says whether the same
    execution name already holds a slot (a duplicate of a request in flight)."""

    def __init__(self, message: str, *, name_in_flight: bool) -> None:
        super().__init__(message)
        self.name_in_flight = name_in_flight


class InFlightLedger:
    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        *,
        limit: int,
        running: RunningNames,
        ended: Ended = lambda name: False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.s3, self.bucket, self.key, self.limit, self.running = s3, bucket, key, limit, running
        self.ended = ended
        self.clock = clock or (lambda: datetime.now(UTC))

    def take(self, name: str, sender: str | None) -> None:
        """Take a slot for execution `name`, asked for by `sender`; Full when the limit or the sender's
        share is reached (nothing written then)."""
        for _ in range(CONDITIONAL_ATTEMPTS):
            slots, etag = self._read()
            listed = self.running()
            now = self.clock()
            kept = [
                slot
                for slot in slots
                if slot.name in listed or (_age(slot, now) < LISTING_GRACE_SECONDS and not self.ended(slot.name))
            ]
            others = [slot for slot in kept if slot.name != name]
            in_flight = (listed | {slot.name for slot in others}) - {name}
            name_in_flight = name in listed or len(others) < len(kept)
            if len(in_flight) >= self.limit:
                raise Full(
                    f"{len(in_flight)} executions are in flight, this cache's limit (MaxExecutionsInFlight)",
                    name_in_flight=name_in_flight,
                )
            share = sender_share(self.limit)
            held = sum(1 for slot in others if slot.sender == principal(sender))
            if sender and held >= share:
                raise Full(
                    f"sender {principal(sender)} holds {held} of the {self.limit} execution slots, its share "
                    f"({share}); its requests wait while others' go ahead",
                    name_in_flight=name_in_flight,
                )
            taken = Slot(name=name, sender=principal(sender), taken_at=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
            if self._write([*others, taken], etag):
                return
        raise errors.TooManyExecutions(f"{self.key} kept changing under {CONDITIONAL_ATTEMPTS} requests; try again")

    def give_back(self, name: str) -> None:
        """Free `name`'s slot (its execution did not start, or another run absorbed the request)."""
        for _ in range(CONDITIONAL_ATTEMPTS):
            slots, etag = self._read()
            left = [slot for slot in slots if slot.name != name]
            if len(left) == len(slots) or self._write(left, etag):
                return
        # Not given back: it lapses after LISTING_GRACE_SECONDS, since its name is never listed RUNNING.

    def _read(self) -> tuple[list[Slot], str | None]:
        body, etag = get_with_etag(self.s3, self.bucket, self.key)
        if body is None:
            return [], None
        try:
            return [Slot(**item) for item in json.loads(body)["slots"]], etag
        except (ValueError, KeyError, TypeError):
            # Only the request Lambda writes it; an unreadable ledger is replaced, the listing still counts.
            return [], etag

    def _write(self, slots: list[Slot], etag: str | None) -> bool:
        body = json.dumps({"slots": [asdict(slot) for slot in slots]}, sort_keys=True).encode()
        try:
            put_bytes(self.s3, self.bucket, self.key, body, "application/json", if_match=etag, create=etag is None)
        except Conflict:
            return False
        return True


def _age(slot: Slot, now: datetime) -> float:
    try:
        taken = datetime.strptime(slot.taken_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return float("inf")
    return (now - taken) / timedelta(seconds=1)
