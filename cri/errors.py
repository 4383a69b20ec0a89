"""Errors servicers raise; the interceptor turns each into its gRPC status and message."""

from __future__ import annotations

import grpc


class CriError(Exception):
    """Base: a message a person understands, and the status kubelet acts on."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(CriError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CriError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CriError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CriError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(CriError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(CriError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(CriError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(CriError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Internal(CriError):
    code = grpc.StatusCode.INTERNAL


class ResourceExhausted(CriError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def require(value: object, what: str) -> None:
    """Empty required fields are the commonest bad input; name the field."""
    if not value:
        raise InvalidArgument(f"{what} is required")
