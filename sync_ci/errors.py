"""Exit codes and the project's own error types (third-party errors are translated at the edges)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes shared by every command (doctor alone returns a failure count)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNMEASURED = 3


class SyncCIError(Exception):
    """Base of every error `command()` turns into one stderr line."""

    exit_code: ExitCode = ExitCode.FAILED


class UsageError(SyncCIError):
    """Bad command-line arguments."""

    exit_code = ExitCode.USAGE


class SettingsError(SyncCIError):
    """A missing or malformed setting, named with its fix."""

    exit_code = ExitCode.USAGE


class MissingExtra(SyncCIError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    exit_code = ExitCode.USAGE


class GuardViolation(SyncCIError):
    """A write the prefix firewall or the read-only guard refused before it was sent."""

    exit_code = ExitCode.FAILED


class UnreachableError(SyncCIError):
    """The store or the Worker could not be reached: nothing was measured."""

    exit_code = ExitCode.UNMEASURED


class StoreError(SyncCIError):
    """The object store answered with an error."""


class WorkerError(SyncCIError):
    """The Worker answered with something the contract does not allow."""


class ContractError(SyncCIError):
    """A document (catalog, manifest, alert) does not match contract v1."""


class LockBusy(SyncCIError):
    """Another run holds the lock."""

    exit_code = ExitCode.OK
