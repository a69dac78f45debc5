"""Requests the live view refuses, logged without their content.

aiohttp logs a request it cannot parse (a NUL in a header, a line over max_line_size, a missing
colon, header folding, a bad HTTP version) as "Error handling request" with a traceback whose
exception message quotes the raw line, an `Authorization: Bearer TOKEN` header included, once
per request: an unauthenticated client could both fill the journal and put the token in it.
`access_log=None` does not cover that path.

`RequestErrorLog` takes the place of aiohttp's server logger (the `logger` argument of its
request handler). Every refusal is counted; at most one line per `every_s` is logged, naming the
client's address and the kind of error (the exception's class and, for a failure in our own
handler, where it happened), never the exception's message, a header, a body or a raw byte.
The refusals not logged are counted in the next line.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("emotion_edge.web.server")

# aiohttp's messages that carry nothing from the request (their %s is the client address)
_ERROR_FROM = "Error handling request from %s"
_PLAIN = {
    "Missing return statement on request handler",
    "Unhandled exception",
    "Unhandled runtime exception",
    "Request handler timed out.",
    "Ignored premature client disconnection",
    "Ignored premature client disconnection 2",
    "Ignored premature client disconnection.",
    "Uncompleted request.",
}


def client_address(value: object) -> str:
    """The address if it is one (IPv4/IPv6), else '?': nothing else from a request is logged."""
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value.strip("[]").split("%", 1)[0]))
        except ValueError:
            pass
    return "?"


def error_kind(exc: BaseException) -> str:
    """The class of a parse error; for a failure in a handler also the innermost frame (file,
    line, function). Never the message: aiohttp's quote the offending line."""
    from aiohttp.http_exceptions import HttpProcessingError

    name = type(exc).__name__
    if isinstance(exc, HttpProcessingError):
        return name
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return name
    last = frames[-1]
    return f"{name} at {Path(last.filename).name}:{last.lineno} in {last.name}"


class RequestErrorLog:
    """Counts refused requests and logs them at most once per `every_s` (see the module doc).

    Also a stand-in for the `logging.Logger` aiohttp's request handler writes to: its debug,
    info, warning, error, exception and log methods end up in `refused` or, for messages that
    carry no exception, in one fixed line."""

    def __init__(
        self,
        every_s: float = 10.0,
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_s = every_s
        self.count = 0  # refused requests, all kinds
        self.by_kind: Counter[str] = Counter()
        self._log = logger
        self._clock = clock
        self._last_line = -float("inf")
        self._not_logged = 0

    def refused(self, remote: object, kind: str, level: int = logging.WARNING) -> None:
        """One refused request from `remote` (an address; anything else is logged as '?')."""
        self.count += 1
        self.by_kind[kind] += 1
        now = self._clock()
        if now - self._last_line < self.every_s:
            self._not_logged += 1
            return
        more = self._not_logged
        self._last_line, self._not_logged = now, 0
        self._log.log(
            level,
            "web: refused a request from %s (%s)%s",
            client_address(remote),
            kind,
            f"; {more} more refused since the last such line" if more else "",
        )

    def flush(self) -> None:
        """Log the refusals not logged yet (at shutdown)."""
        if self._not_logged:
            self._log.warning(
                "web: %d more requests refused since the last such line (all so far: %s)",
                self._not_logged,
                ", ".join(f"{k} {n}" for k, n in self.by_kind.most_common(5)),
            )
            self._not_logged = 0

    # -- what aiohttp's RequestHandler calls on its logger -------------------------------------

    def _from_aiohttp(self, level: int, msg: object, args: tuple, exc_info: object) -> None:
        if exc_info is True:
            exc_info = sys.exc_info()
        exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
        if isinstance(exc, BaseException):
            from aiohttp.http_exceptions import HttpProcessingError

            remote = args[0] if msg == _ERROR_FROM and args else None
            if isinstance(exc, HttpProcessingError):
                self.refused(remote, f"malformed request: {error_kind(exc)}")
            else:
                self.refused(remote, f"handler failed: {error_kind(exc)}", logging.ERROR)
            return
        text = msg if msg in _PLAIN else "a message that may quote the request, withheld"
        self._log.log(level, "web: aiohttp: %s", text)

    def debug(self, msg: object, *args, exc_info: object = None, **_kw) -> None:
        self._from_aiohttp(logging.DEBUG, msg, args, exc_info)

    def info(self, msg: object, *args, exc_info: object = None, **_kw) -> None:
        self._from_aiohttp(logging.INFO, msg, args, exc_info)

    def warning(self, msg: object, *args, exc_info: object = None, **_kw) -> None:
        self._from_aiohttp(logging.WARNING, msg, args, exc_info)

    def error(self, msg: object, *args, exc_info: object = None, **_kw) -> None:
        self._from_aiohttp(logging.ERROR, msg, args, exc_info)

    def exception(self, msg: object, *args, exc_info: object = True, **_kw) -> None:
        self._from_aiohttp(logging.ERROR, msg, args, exc_info)

    def critical(self, msg: object, *args, exc_info: object = None, **_kw) -> None:
        self._from_aiohttp(logging.CRITICAL, msg, args, exc_info)

    def log(self, level: int, msg: object, *args, exc_info: object = None, **_kw) -> None:
        self._from_aiohttp(level, msg, args, exc_info)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging.Logger's name
        return self._log.isEnabledFor(level)


async def read_form_token(request, errors: RequestErrorLog) -> str | None:
    """The sign-in form's `token` field; None (counted and logged as a refusal, without the
    body) when the form cannot be read: not UTF-8, an unknown charset, a broken multipart body,
    or a file where the token belongs. Too large a body still raises aiohttp's 413."""
    from aiohttp import web

    try:
        form = await request.post()
    except web.HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable form is the client's error
        errors.refused(request.remote, f"unreadable sign-in form: {type(exc).__name__}")
        return None
    value = form.get("token", "")
    if not isinstance(value, str):
        errors.refused(request.remote, "unreadable sign-in form: token is not a text field")
        return None
    return value.strip()
