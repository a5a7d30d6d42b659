"""The app's error tree.

Expected errors (`FtdeskError` and subclasses) carry one sentence a person can act on; the CLI
prints it and exits 2 (bad input) or 1, the GUI shows it in the status bar or on the field.
Anything else is a bug: logged with its traceback and shown in a dialog.
"""

from __future__ import annotations

import errno


class FtdeskError(Exception):
    """An expected failure with a message meant for the user."""

    exit_code = 1


class ConfigError(FtdeskError):
    """A config file or value is invalid; the message names the field."""

    exit_code = 2


class DatasetError(FtdeskError):
    """The dataset is missing or unusable; the message names the file and line."""

    exit_code = 2


class JobNotFoundError(FtdeskError):
    """No job with that id (or unique id prefix)."""

    exit_code = 2


class JobStateError(FtdeskError):
    """The operation is not allowed in the job's current state (e.g. resume a completed job)."""

    exit_code = 2


class OfflineError(FtdeskError):
    """Offline mode refuses something that needs the network."""

    exit_code = 2


class RuntimeNotReadyError(FtdeskError):
    """The trainer runtime (a Python with the train extra) is missing or broken."""


class SecretStoreError(FtdeskError):
    """The keychain cannot be used; the message names the backend problem and the way out."""


class ProviderError(FtdeskError):
    """A provider failed to launch, watch or cancel a job."""


class AuthError(ProviderError):
    """The provider rejected the credentials."""


class SpendCapError(ProviderError):
    """A launch would take the month's cloud spend past the user's monthly cap; nothing was
    created. The message names the month's spend, the cap and the budget."""

    exit_code = 2


class CapacityError(ProviderError):
    """No capacity for the requested hardware."""


class RateLimitedError(ProviderError):
    """The provider asks us to slow down."""


class BalanceError(ProviderError):
    """The provider account cannot pay for this (HTTP 402): no other hardware choice helps."""


class InvalidRequestError(ProviderError):
    """The provider refused the request as malformed; `errors` lists each problem it named.

    Args:
        message: The sentence for the user.
        errors: The provider's individual validation failures, in its words.
    """

    def __init__(self, message: str, errors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.errors = errors


class NotFoundError(ProviderError):
    """The provider knows no such resource (a pod that was deleted, for instance)."""


class ServerError(ProviderError):
    """The provider failed on its side (HTTP 5xx, or an answer that is not its API's).

    Args:
        message: The sentence for the user.
        status: The HTTP status, or None when no answer came.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UnreachableError(ProviderError):
    """The provider could not be reached, or did not answer in time; the message names the call."""


class StoreError(FtdeskError):
    """The job database cannot be used (locked too long, corrupt, or from a newer app)."""


class DiskFullError(StoreError):
    """A write failed because the drive is full; what was stored before is intact and readable."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` is a write that failed for want of space (ENOSPC, a quota, SQLITE_FULL)."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    return "database or disk is full" in str(exc)
