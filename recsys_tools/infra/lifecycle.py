"""One ``with`` protocol for the multi-process test infrastructure (clusters, sentinel sets).

Such a set starts several servers in turn: when one of them fails to start, the ones
already running must be stopped before the error propagates, or they outlive the test.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartedOnEnter:
    """``with x:`` starts ``x`` (stopping what it started when the start fails) and stops it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
