"""Errors a request can meet, each with the HTTP status it is answered with.

Handlers raise these; `app.py` turns every one into a JSON body `{"error": ...}`. Anything that
is the client's fault is a 4xx; anything that is a momentary lack of capacity is a 503 with
Retry-After, so that clients and load balancers back off and retry instead of giving up.
"""

from __future__ import annotations


class ServingError(Exception):
    status = 500
    retry_after: int | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ServingError):
    """The request is malformed: wrong JSON shape, wrong tensor dtype or shape, bad parameter."""

    status = 400


class NotAnImage(BadRequest):
    """Bytes that are not a decodable image, or a truncated one, or too many pixels."""


class ModelNotFound(ServingError):
    status = 404


class UnsupportedMediaType(ServingError):
    status = 415


class Unavailable(ServingError):
    """A momentary lack of capacity: the model is not ready (or restarting), the queue is full,
    the memory for decoding is taken, or the result did not come in time."""

    status = 503
    retry_after = 1


class NotReady(Unavailable):
    pass


class QueueFull(Unavailable):
    pass


class TimedOut(Unavailable):
    pass


class DecoderBusy(Unavailable):
    """The worker's memory for decoding images stayed taken until the request's deadline."""


class InferenceFailed(Unavailable):
    """The interpreter failed on the batch; the worker is rebuilding it."""
