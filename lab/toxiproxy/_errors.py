"""The one exception the control plane raises: an API error with its HTTP status."""

from __future__ import annotations

__all__ = [
    "ApiError",
    "bad_request_body",
    "missing_field",
    "proxy_already_exists",
    "proxy_not_found",
    "toxic_already_exists",
    "toxic_not_found",
]


class ApiError(Exception):
    """Rendered as ``{"error": message, "status": status}`` with that HTTP status.

    Messages are upstream Toxiproxy's, word for word, because clients and tests compare
    them (``HTTP 409: proxy already exists``).
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, object]:
        return {"error": self.message, "status": self.status}


def bad_request_body(detail: str) -> ApiError:
    return ApiError(f"bad request body: {detail}", 400)


def missing_field(field: str) -> ApiError:
    return ApiError(f"missing required field: {field}", 400)


def proxy_not_found() -> ApiError:
    return ApiError("proxy not found", 404)


def toxic_not_found() -> ApiError:
    return ApiError("toxic not found", 404)


def proxy_already_exists() -> ApiError:
    return ApiError("proxy already exists", 409)


def toxic_already_exists() -> ApiError:
    return ApiError("toxic already exists", 409)
