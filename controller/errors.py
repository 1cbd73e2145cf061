"""One exception tree for the whole controller.

Every error a user can cause is a full sentence that quotes the bad value and
says how to fix it. The CLI maps the tree to exit codes: InvalidInput -> 2,
any other ControllerError -> 1. Library errors are wrapped at the boundary and
re-raised ``from`` their cause.
"""

from __future__ import annotations

from pathlib import Path


class ControllerError(Exception):
    """Base of every error the controller raises on purpose."""

    exit_code: int = 1


class InvalidInput(ControllerError):
    """Bad input from the user: a manifest, a data file, an argument.

    ``file``, ``field`` and ``value`` locate the problem so the one-line
    message can name all three.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | Path | None = None,
                 field: str | None = None, value: object = None) -> None:
        self.file = str(file) if file is not None else None
        self.field = field
        self.value = value
        self.reason = message
        parts = []
        if self.file:
            parts.append(self.file)
        if field:
            parts.append(f"field {field}")
        if value is not None and not isinstance(value, (dict, list)) and not already_said(message, value):
            message = f"{message} (got {shown_value(value)})"
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


#: Longest quoted value in a message: values may be bytes of a user file, shown escaped and cut short.
MAX_SHOWN = 60


def shown_value(value: object) -> str:
    """repr() escapes control characters; the cut keeps a file's content out of logs."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


def already_said(message: str, value: object) -> bool:
    """Whether the message shows the value: a number only as "(got N)" or a closing "got N", since "at
    least 1" does not show a bad 1; anything else as it would be quoted."""
    if isinstance(value, (int, float)):
        return f"(got {shown_value(value)})" in message or message.endswith(f"got {shown_value(value)}")
    return shown_value(value) in message


class NotFound(ControllerError):
    """A named index, version or plan does not exist in the store."""


class StoreError(ControllerError):
    """The store on disk is unreadable, inconsistent or locked."""


class StalePlan(ControllerError):
    """A saved plan no longer matches the manifests or the observed state."""


class CheckError(ControllerError):
    """A drift or golden check could not be computed (not: a check failed)."""


class EmbedError(ControllerError):
    """An embedder could not produce vectors."""


class EmbeddingBusy(EmbedError):
    """Another process owns the embedding work of this model (a `controller embed` job, or a reconcile)."""


class EmbedInterrupted(EmbedError):
    """A batch job stopped on SIGTERM/SIGINT after keeping everything it had in flight."""


class BackendError(ControllerError):
    """A vector backend (index files in the store, pgvector, Qdrant) could not do what was asked.

    The message names the backend and the setting at fault, never a credential.
    """

    def __init__(self, backend: str, message: str, *, setting: str | None = None) -> None:
        self.backend = backend
        self.setting = setting
        where = f"backend {backend}" + (f" ({setting})" if setting else "")
        super().__init__(f"{where}: {message}")


class GitError(ControllerError):
    """A git command failed: unreachable remote, unknown branch or ref, timeout."""


class Conflict(ControllerError):
    """A request mixes two things that must never meet, e.g. vectors of two model spaces."""


class NotReady(ControllerError):
    """Something exists but cannot answer yet (an index with no routed version loaded)."""
