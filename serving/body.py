"""Request bodies under the size limit (MAX_CONTENT_LENGTH), for fixed-length and chunked uploads.

Werkzeug refuses a Content-Length over the limit up front (413), but a chunked body is only cut
at the limit, and the truncated bytes would then be reported as a broken image. `read_body`
answers 413 for both. `drain` reads what the client is still sending before a 413 goes out,
so that the client reads the answer and its keep-alive connection stays usable, up to a bound
beyond which the connection is simply closed.
"""

from __future__ import annotations

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

DRAIN_FACTOR = 4  # read at most this many times the limit to keep a connection alive


def read_body() -> bytes:
    data = request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None and len(data) >= limit:
        raise RequestEntityTooLarge()
    return data


def drain() -> None:
    limit = current_app.config["MAX_CONTENT_LENGTH"] or 0
    length = request.content_length
    if length is not None and length > DRAIN_FACTOR * limit:
        return
    stream = request.environ.get("wsgi.input")
    budget = DRAIN_FACTOR * limit
    try:
        while budget > 0 and stream is not None:
            chunk = stream.read(min(65536, budget))
            if not chunk:
                break
            budget -= len(chunk)
    except OSError:  # the client went away: nothing left to keep alive
        pass
