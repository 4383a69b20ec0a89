"""Docker's error replies: JSON {"message": ...} with the status the docker CLI acts on."""

from __future__ import annotations

from aiohttp import web

from engine import errors as eng

# The engine's failure kinds as the statuses dockerd answers for the same situations.
STATUS: dict[type[eng.EngineError], int] = {
    eng.InvalidArgument: 400,
    eng.NotFound: 404,
    eng.AlreadyExists: 409,
    eng.FailedPrecondition: 409,
    eng.Unauthenticated: 401,
    eng.PermissionDenied: 403,
    eng.Unavailable: 503,
    eng.ResourceExhausted: 507,
}
MAX_MESSAGE = 2000


def status_of(exc: eng.EngineError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def reply(status: int, message: str) -> web.Response:
    """The body every Docker client parses for its error line."""
    return web.json_response({"message": message[:MAX_MESSAGE]}, status=status)
