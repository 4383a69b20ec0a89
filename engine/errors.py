"""Errors the engine raises; each front end maps them to its own status (gRPC code, HTTP)."""

from __future__ import annotations


class EngineError(Exception):
    """Base: a message a person understands; the subclass says what kind of failure."""


class InvalidArgument(EngineError):
    """The request can never succeed as given."""


class NotFound(EngineError):
    """The named object does not exist."""


class AlreadyExists(EngineError):
    """A name or id is already taken."""


class FailedPrecondition(EngineError):
    """The object is in the wrong state for this request (a conflict)."""


class Unavailable(EngineError):
    """A dependency (registry, monitor) cannot be reached now."""


class DeadlineExceeded(EngineError):
    """It took longer than allowed."""


class Unauthenticated(EngineError):
    """A registry wants credentials."""


class PermissionDenied(EngineError):
    """A registry refused the credentials."""


class Internal(EngineError):
    """Something that should not happen did."""


class ResourceExhausted(EngineError):
    """Out of disk or another limit."""


def require(value: object, what: str) -> None:
    """Empty required fields are the commonest bad input; name the field."""
    if not value:
        raise InvalidArgument(f"{what} is required")
