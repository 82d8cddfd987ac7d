"""Exceptions of the Dragon package.

Errors of the C++ runtime arrive with the runtime's own text and one of these
types (``DragonTimeoutError`` is also a ``TimeoutError``,
``DragonConnectionError`` a ``ConnectionError``, ``DragonValueError`` a
``ValueError``, ``DragonNotFoundError`` a ``LookupError``).
"""

from __future__ import annotations

from dragon._core import (
    DragonConnectionError,
    DragonError,
    DragonNotFoundError,
    DragonTimeoutError,
    DragonValueError,
)


class DragonProcessGroupError(DragonError):
    """A ProcessGroup operation that cannot be done in the group's state."""


class RemoteException:
    """An exception raised by a Python-callable member, as it reported it:
    puid, rank, type name, message, traceback text, and the exception object
    itself when it unpickles here (else None)."""

    __slots__ = ("puid", "rank", "type_name", "message", "traceback", "exception")

    def __init__(self, puid: int, rank: int, type_name: str, message: str, traceback: str,
                 exception: BaseException | None = None):
        self.puid, self.rank, self.type_name = puid, rank, type_name
        self.message, self.traceback, self.exception = message, traceback, exception

    def __repr__(self) -> str:
        return (f"RemoteException(puid={self.puid}, rank={self.rank}, type_name={self.type_name!r}, "
                f"message={self.message!r})")

    def __str__(self) -> str:
        return f"rank {self.rank} (puid {self.puid}): {self.type_name}: {self.message}"


class DragonUserCodeError(DragonProcessGroupError):
    """Members of a group failed (ignore_error_on_exit=False).

    ``exit_codes`` maps the puid of each failed member to its exit code
    (minus the signal number when a signal ended it); ``exceptions`` holds
    the exceptions Python-callable members raised, with their tracebacks.
    """

    def __init__(self, message: str, exit_codes: dict[int, int] | None = None,
                 exceptions: list[RemoteException] | None = None):
        super().__init__(message)
        self.exit_codes = dict(exit_codes or {})
        self.exceptions = list(exceptions or [])


__all__ = [
    "DragonConnectionError",
    "DragonError",
    "DragonNotFoundError",
    "DragonProcessGroupError",
    "DragonTimeoutError",
    "DragonUserCodeError",
    "DragonValueError",
    "RemoteException",
]
