"""The one error type of the serving layer, and how REST and gRPC report it."""

from __future__ import annotations

import grpc


class InferenceError(Exception):
    """A request the server will not run: a client mistake (4xx) or no capacity now (503, 504).

    `status` is the HTTP status; gRPC answers with the matching status code. The message goes
    back to the client as it is, so it must say what was wrong and how to fix it.
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return GRPC_CODES.get(self.status, grpc.StatusCode.INVALID_ARGUMENT)


# 503 is UNAVAILABLE, the code gRPC clients retry by default; a full queue and a stopped batcher
# are both "try again later", not "your request is wrong" (RESOURCE_EXHAUSTED is not retried).
GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
