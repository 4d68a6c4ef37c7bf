"""Errors the services raise; ``hecht.web`` maps each class to one HTTP status.

They carry no HTTP knowledge themselves, so domain code stays pure and the
status table lives in one place (``web.ERROR_STATUS``).
"""
from __future__ import annotations


class HechtError(Exception):
    title = "Bad request"

    def __init__(self, detail: str, *, errors: dict | None = None, **extra):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extra = extra


class Invalid(HechtError):
    """Well-formed input that breaks a rule (422), with a field-by-field map."""
    title = "Validation failed"


class NotFound(HechtError):
    title = "Not found"


class Conflict(HechtError):
    """Duplicate, or a state that does not allow the operation (409)."""
    title = "Conflict"


class InvalidTransition(Conflict):
    title = "Illegal state transition"

    def __init__(self, entity: str, current: str, action: str):
        article = "an" if entity[:1].lower() in "aeiou" else "a"
        super().__init__(f"cannot {action} {article} {entity} that is {current}", current_status=current)


class PreconditionFailed(HechtError):
    title = "Precondition failed"


class PreconditionRequired(HechtError):
    title = "Precondition required"


class Unauthorized(HechtError):
    title = "Unauthorized"


class Forbidden(HechtError):
    title = "Forbidden"


class TooManyRequests(HechtError):
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(HechtError):
    title = "Service unavailable"
