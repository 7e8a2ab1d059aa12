"""Domain errors. Each names the problem and, where there is one, the fix.

Step Functions retries only transient Lambda/service errors; these domain errors
are raised by their class name (the `Error` field of a failed task) and are never
retried, so their names are part of the state machine contract.
"""

from __future__ import annotations


class ModelCacheError(Exception):
    """Base class: a problem the user can act on. `exit_code` is the CLI's: one code per kind of failure,
    shared with model-cache-loader (docs/reference/cli.md): 2 usage or setup, 3 not found, 4 integrity, 5 access,
    7 still failing after retries or busy (try again)."""

    exit_code = 1


class InvalidRequest(ModelCacheError):
    """A request, repo id, revision, glob or path that is not acceptable."""

    exit_code = 2


class RepoNotFound(ModelCacheError):
    exit_code = 3


class RevisionNotFound(ModelCacheError):
    exit_code = 3


class EntryNotFound(ModelCacheError):
    exit_code = 3


class GatedRepo(ModelCacheError):
    """The repo needs a token (or a different one): an access problem, the same code as S3's."""

    exit_code = 5


class BucketNotFound(ModelCacheError):
    exit_code = 5


class AccessDenied(ModelCacheError):
    exit_code = 5


class IntegrityError(ModelCacheError):
    """Bytes that do not match the Hub's declared size or hash. Nothing is published. The same code
    as the loader's IntegrityError (docs/reference/cli.md, the table both CLIs share)."""

    exit_code = 4


class TransferError(ModelCacheError):
    """A transfer that still failed after its retries."""

    exit_code = 7


class SnapshotBusy(ModelCacheError):
    """gc is deleting the snapshot this run would write or point a ref at; run it again in a minute."""

    exit_code = 7


class PlanLimitExceeded(ModelCacheError):
    """A plan that would break an AWS limit (a Lambda's 15 minutes, a Fargate task's timeout, the
    number of parts or copy units, ...): refused at plan time, before anything is uploaded."""

    exit_code = 2


class CopierNotConfigured(ModelCacheError):
    """A file at or above the Fargate threshold, on a stack deployed without the Fargate copier
    (an empty CopierImageUri): refused at plan time, before anything is uploaded."""

    exit_code = 2


class RepoNotAllowed(ModelCacheError):
    """The repo's org is not one this cache mirrors (the platform's allow or deny list)."""

    exit_code = 2


class QuotaExceeded(ModelCacheError):
    """The selection has more files or bytes than this cache takes for one repo."""

    exit_code = 2


class ForceNotAllowed(ModelCacheError):
    """`force: true` from a sender that is not one of the platform's principals."""

    exit_code = 2


class TooManyExecutions(ModelCacheError):
    """As many executions are in flight as the cache allows; the request waits on the queue and comes back."""

    exit_code = 7
