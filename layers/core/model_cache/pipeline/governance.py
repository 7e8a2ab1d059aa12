"""Who may ask for what, and how much: the platform's request policy, enforced before anything is written.

The policy comes from the environment the template sets on the request and plan functions, never from the
request: `MODEL_CACHE_ALLOWED_ORGS` / `MODEL_CACHE_DENIED_ORGS` (comma-separated Hub orgs, case-insensitive;
an allow list that is set admits only its orgs), `MODEL_CACHE_MAX_REPO_BYTES`, `MODEL_CACHE_MAX_REPO_FILES`
(of the manifest a request would publish: the union of every selection of the commit, held again by
Publish), `MODEL_CACHE_FORCE_SENDERS` (the SQS SenderIds - IAM user ids, role ids - that may send
`force: true`) and `MODEL_CACHE_MAX_EXECUTIONS` (executions in flight). A variable that is absent sets no
rule (the CLI on an operator's machine, the tests); the template always sets every one, so a deployed stack
refuses `force` from everyone but the platform's principals unless told otherwise.

Each refusal is a named domain error: from the request Lambda the message goes to the dead-letter queue,
from the Plan task the execution ends at PlanFailed; either way before the run claims or writes anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from model_cache.adapters.hubapi import HubFile
from model_cache.contract import errors

ALLOWED_ORGS_ENV = "MODEL_CACHE_ALLOWED_ORGS"
DENIED_ORGS_ENV = "MODEL_CACHE_DENIED_ORGS"
MAX_REPO_BYTES_ENV = "MODEL_CACHE_MAX_REPO_BYTES"
MAX_REPO_FILES_ENV = "MODEL_CACHE_MAX_REPO_FILES"
FORCE_SENDERS_ENV = "MODEL_CACHE_FORCE_SENDERS"
MAX_EXECUTIONS_ENV = "MODEL_CACHE_MAX_EXECUTIONS"


@dataclass(frozen=True)
class RequestPolicy:
    allowed_orgs: frozenset[str] | None = None  # None: every org not denied
    denied_orgs: frozenset[str] = frozenset()
    max_repo_bytes: int | None = None
    max_repo_files: int | None = None
    force_senders: frozenset[str] | None = None  # None: anyone may force; empty: no one
    max_executions: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RequestPolicy:
        env = os.environ if environ is None else environ
        allowed = _names(env.get(ALLOWED_ORGS_ENV, ""))
        return cls(
            allowed_orgs=allowed or None,
            denied_orgs=_names(env.get(DENIED_ORGS_ENV, "")),
            max_repo_bytes=_limit(env, MAX_REPO_BYTES_ENV),
            max_repo_files=_limit(env, MAX_REPO_FILES_ENV),
            force_senders=_names(env[FORCE_SENDERS_ENV], fold=False) if FORCE_SENDERS_ENV in env else None,
            max_executions=_limit(env, MAX_EXECUTIONS_ENV),
        )

    @property
    def limits_repo_size(self) -> bool:
        return self.max_repo_files is not None or self.max_repo_bytes is not None

    def check_repo(self, repo_id: str) -> None:
        """RepoNotAllowed when the repo's org is denied, or an allow list is set and does not name it."""
        org = org_of(repo_id)
        if org in self.denied_orgs:
            raise errors.RepoNotAllowed(f"{repo_id}: the org {org!r} is on this cache's deny list ({DENIED_ORGS_ENV})")
        if self.allowed_orgs is not None and org not in self.allowed_orgs:
            allowed = ", ".join(sorted(self.allowed_orgs))
            raise errors.RepoNotAllowed(
                f"{repo_id}: the org {org!r} is not one this cache mirrors (allowed: {allowed}); "
                f"ask the platform team to add it to {ALLOWED_ORGS_ENV}"
            )

    def check_force(self, force: bool, sender: str | None) -> None:
        """ForceNotAllowed when `force` comes from a sender that is not one of the platform's principals."""
        if not force or self.force_senders is None:
            return
        if sender is None or not any(
            sender == allowed or sender.startswith(allowed + ":") for allowed in self.force_senders
        ):
            raise errors.ForceNotAllowed(
                f"force: true is reserved to the platform's principals ({FORCE_SENDERS_ENV}); sender {sender!r} "
                "may request the model without it"
            )

    def check_union(
        self, repo_id: str, revision: str, published: Sequence[Mapping[str, object]], selected: Sequence[HubFile]
    ) -> None:
        """QuotaExceeded when the manifest this request would publish - the files already published for the
        commit (`published`, manifest entries) and the selected ones it lacks - is over the quota. The quota is
        per repo, so narrow requests that each fit must not add up to a repo the cache refuses as a whole."""
        sizes = {str(entry.get("path")): _size(entry.get("size")) for entry in published}
        for hub_file in selected:
            sizes.setdefault(hub_file.path, hub_file.size)
        self.check_repo_total(
            repo_id, revision, files=len(sizes), size=sum(sizes.values()), what="manifest this request would publish"
        )

    def check_repo_total(self, repo_id: str, revision: str, *, files: int, size: int, what: str) -> None:
        if self.max_repo_files is not None and files > self.max_repo_files:
            raise errors.QuotaExceeded(
                f"{repo_id}@{revision}: the {what} has {files:,} files, more than this cache's "
                f"{self.max_repo_files:,} per repo ({MAX_REPO_FILES_ENV}); narrow it with include/exclude"
            )
        if self.max_repo_bytes is not None and size > self.max_repo_bytes:
            raise errors.QuotaExceeded(
                f"{repo_id}@{revision}: the {what} is {size:,} bytes, more than this cache's "
                f"{self.max_repo_bytes:,} per repo ({MAX_REPO_BYTES_ENV}); narrow it with include/exclude"
            )


def _size(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def org_of(repo_id: str) -> str:
    """The Hub org (or user) of a repo id, case-folded; a repo without one (`gpt2`) is its own org."""
    return repo_id.split("/", 1)[0].casefold()


def _names(text: str, *, fold: bool = True) -> frozenset[str]:
    names = (name.strip() for name in text.split(","))
    return frozenset(name.casefold() if fold else name for name in names if name)


def _limit(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    if not text or text == "0":
        return None
    try:
        value = int(text)
    except ValueError:
        raise errors.InvalidRequest(f"{name} must be a whole number, got {text!r}") from None
    if value < 0:
        raise errors.InvalidRequest(f"{name} must be >= 0 (0 means no limit), got {value}")
    return value
