"""Errors of the job system (both under :class:`shipkit.errors.ShipkitError`)::

    ShipkitError
    └── JobStateError        the job is not in a state that allows the operation
        └── LeaseLostError   this process no longer holds the job (taken over, cancelled, gone)

An unknown job id raises :class:`shipkit.errors.KeyNotFoundError`.
"""

from __future__ import annotations

from shipkit.errors import ShipkitError

__all__ = ["JobStateError", "LeaseLostError"]


class JobStateError(ShipkitError):
    """The operation is not allowed in the job's current state (e.g. ``complete`` of a queued job)."""


class LeaseLostError(JobStateError):
    """This process's hold on a running job ended: another worker took it over after the lease
    expired, or the record changed under it. Its result is not recorded."""
