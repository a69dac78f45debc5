"""The image analysis API on the [web] server: send a photo, get its faces and emotions as JSON.

Routes (added to the live view's aiohttp app by `AnalyzeAPI.add_routes`):

  POST /api/v1/analyze       one image: a multipart form field `image` (curl -F image=@x.jpg),
                             a raw JPEG/PNG body (Content-Type image/jpeg, image/png or
                             application/octet-stream) or JSON {"image": "<base64>"}; options
                             crops, annotated (true/false), top_k (1..labels) and scan
                             (photo: every detector view, the default; frame: one pass) as query
                             parameters, form fields or JSON keys
  GET  /api/v1/openapi.json  the OpenAPI 3.1 document of the above
  GET  /api/v1/stats         counts: requests, analysed, faces, refusals by code, in progress
  GET  /analyze              a page to drop a photo on (static/analyze.html)

Answers are JSON, errors too: {"error": "...", "code": "...", "request_id": "..."} with 400
(empty or malformed request), 413 (too many bytes or pixels), 415 (not JPEG/PNG), 422
(truncated or undecodable) or 429 (too many analyses at once, with Retry-After).

Limits: uploads over `max_bytes` are refused by their Content-Length before a byte is read,
or as soon as the streamed body passes the limit; the pixel count is read from the header
before decoding (emotion_edge.analyze.image); at most `workers` images are analysed at once
on their own threads (never the pipeline's) and `queue` more wait, the rest get 429. A
request holds its place from its first byte, so the memory held by uploads stays below
(workers + queue) x max_bytes; one that has not sent its image in `upload_timeout_s` gets 408.

Privacy: an image lives in memory for the length of its request; it is never written to disk
and never logged (neither are request bodies; the server keeps no access log). The token rule
is the live view's: beyond loopback every route here needs it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from emotion_edge.analyze.analyzer import Analyzer
from emotion_edge.analyze.image import ImageError, ImageLimits
from emotion_edge.web.analyze_openapi import openapi_document

log = logging.getLogger(__name__)

API_PATH = "/api/v1/analyze"
OPENAPI_PATH = "/api/v1/openapi.json"
STATS_PATH = "/api/v1/stats"
SUMMARY_EVERY_S = 60.0  # refusals after the first: one summary log line a minute at most
PAGE_PATH = "/analyze"
RAW_TYPES = ("image/jpeg", "image/png", "application/octet-stream", "image/jpg")
NO_STORE = {"Cache-Control": "no-store"}
CHUNK = 64 * 1024
OPTIONS = ("crops", "annotated", "top_k", "scan")
SCANS = ("photo", "frame")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class AnalyzeLimits:
    """What the API lets clients spend (its own table of figures; the images' are ImageLimits)."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 24_000_000
    workers: int = 2  # analyses running at once (threads)
    queue: int = 4  # more may wait for a worker; beyond workers + queue: 429
    top_k_default: int = 3
    upload_timeout_s: float = 30.0  # a client that has not sent its image by then gets 408

    @property
    def image(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_bytes, max_pixels=self.max_pixels)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def _flag(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ApiError(400, "bad_option", f"{name}: expected true or false, got {str(value)[:20]!r}")


class AnalyzeAPI:
    """The routes above, around one Analyzer (built lazily on a worker thread by `factory`)."""

    def __init__(
        self,
        factory: Callable[[], Analyzer],
        limits: AnalyzeLimits = AnalyzeLimits(),  # noqa: B008 - frozen, immutable
        camera_less: bool = False,
    ) -> None:
        self.limits = limits
        self.camera_less = camera_less  # the server has no live view: "/" shows this page
        self._factory = factory
        self._analyzer: Analyzer | None = None
        self._analyzer_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max(1, limits.workers), thread_name_prefix="web-analyze"
        )
        self._openapi: bytes | None = None
        self.active = 0  # requests admitted and not answered (web thread only)
        self.figures = {
            "requests": 0,
            "analysed": 0,
            "faces": 0,
            "refused_busy": 0,
            "refused_bad": 0,
            "failed": 0,
        }
        self.refusals: dict[str, int] = {}  # by "<status> <code>", since start
        self._tally: dict[str, int] = {}  # refusals not logged yet
        self._tally_logged = 0.0

    # -- wiring --------------------------------------------------------------------------------

    def add_routes(self, app) -> None:
        app.router.add_post(API_PATH, self.handle_analyze)
        app.router.add_get(OPENAPI_PATH, self.handle_openapi)
        app.router.add_get(PAGE_PATH, self.handle_page)
        app.router.add_get(STATS_PATH, self.handle_stats)

    def analyzer(self) -> Analyzer:
        with self._analyzer_lock:
            if self._analyzer is None:
                self._analyzer = self._factory()
            return self._analyzer

    def warm_up(self) -> Analyzer:
        """Load the models now (start-up), so a broken install fails before serving."""
        return self.analyzer()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- routes --------------------------------------------------------------------------------

    async def handle_page(self, request):
        from aiohttp import web

        body = _static("analyze.html")
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=NO_STORE)

    async def handle_openapi(self, request):
        from aiohttp import web

        if self._openapi is None:
            loop = asyncio.get_running_loop()
            analyzer = await loop.run_in_executor(self._pool, self.analyzer)
            doc = openapi_document(analyzer.labels, self.limits)
            self._openapi = json.dumps(doc, indent=1).encode()
        return web.Response(body=self._openapi, content_type="application/json", headers=NO_STORE)

    def stats(self) -> dict:
        lim = self.limits
        return {
            **self.figures,
            "refusals": dict(self.refusals),
            "in_progress": self.active,
            "models_loaded": self._analyzer is not None,
            "limits": {
                "max_bytes": lim.max_bytes,
                "max_pixels": lim.max_pixels,
                "workers": lim.workers,
                "queue": lim.queue,
            },
        }

    async def handle_stats(self, request):
        from aiohttp import web

        return web.json_response(self.stats(), headers=NO_STORE)

    def _refused(self, exc: ApiError, request_id: str):
        """Count a refusal and log it (never the upload): the first at once, then a summary
        a minute at most."""
        key = f"{exc.status} {exc.code}"
        self.refusals[key] = self.refusals.get(key, 0) + 1
        self._tally[key] = self._tally.get(key, 0) + 1
        now = time.monotonic()
        if now - self._tally_logged >= SUMMARY_EVERY_S:
            parts = ", ".join(f"{n} x {k}" for k, n in sorted(self._tally.items()))
            log.info(
                "analyze: refused %s (all refusals: GET %s; the next are summed up once a minute)",
                parts,
                STATS_PATH,
            )
            self._tally, self._tally_logged = {}, now
        return _error(exc, request_id)

    async def handle_analyze(self, request):
        from aiohttp import web

        request_id = uuid.uuid4().hex
        self.figures["requests"] += 1
        lim = self.limits
        if self.active >= lim.workers + lim.queue:
            self.figures["refused_busy"] += 1
            return self._refused(
                ApiError(
                    429,
                    "busy",
                    f"busy: {self.active} images are being analysed or wait "
                    f"(at most {lim.workers} at once and {lim.queue} waiting); retry shortly",
                    {"Retry-After": "1"},
                ),
                request_id,
            )
        self.active += 1
        try:
            try:
                image, opts = await asyncio.wait_for(
                    self._read_upload(request), self.limits.upload_timeout_s
                )
            except (asyncio.TimeoutError, TimeoutError):
                raise ApiError(
                    408,
                    "upload_timeout",
                    f"the upload took longer than {self.limits.upload_timeout_s:g} s",
                ) from None
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            result = await loop.run_in_executor(self._pool, self._analyse, image, opts, request_id)
            body = result.to_json()
            waited = (time.perf_counter() - t0) * 1e3 - result.elapsed_ms
            body["queued_ms"] = round(max(0.0, waited), 1)
            self.figures["analysed"] += 1
            self.figures["faces"] += len(result.faces)
            return web.json_response(body, headers=NO_STORE, dumps=_compact)
        except ApiError as exc:
            self.figures["refused_bad"] += 1
            return self._refused(exc, request_id)
        except ImageError as exc:
            self.figures["refused_bad"] += 1
            return self._refused(ApiError(exc.status, exc.code, str(exc)), request_id)
        except Exception as exc:  # noqa: BLE001 - one bad image must not take the server down
            self.figures["failed"] += 1
            # the type only: neither the image nor anything read from it goes to the log
            log.error("analyze: request %s failed: %s", request_id, type(exc).__name__)
            return _error(ApiError(500, "internal", "the analysis failed"), request_id)
        finally:
            self.active -= 1

    # -- internals -----------------------------------------------------------------------------

    def _analyse(self, image: bytes, opts: dict, request_id: str):
        return self.analyzer().analyze(
            image,
            crops=opts["crops"],
            annotated=opts["annotated"],
            scan=opts["scan"],
            top_k=opts["top_k"],
            request_id=request_id,
        )

    async def _read_upload(self, request) -> tuple[bytes, dict]:
        """The image bytes and the options, whichever of the three forms the client used."""
        lim = self.limits
        ctype = request.content_type.lower()
        # base64 is 4/3 of the bytes; forms and JSON add a little around them
        envelope = lim.max_bytes * 4 // 3 + 64 * 1024
        declared = request.content_length
        if declared is not None and declared > envelope:
            raise ApiError(
                413,
                "too_large",
                f"upload too large: {declared} bytes, the limit is {lim.max_bytes} bytes of image",
            )
        opts = {k: request.query[k] for k in OPTIONS if k in request.query}
        if ctype.startswith("multipart/"):
            image = await self._read_multipart(request, opts)
        elif ctype == "application/json":
            raw = await _read_limited(request.content, envelope, lim.max_bytes)
            try:
                doc = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ApiError(400, "bad_json", f"the body is not valid JSON ({exc})") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("image"), str):
                raise ApiError(
                    400, "bad_json", 'JSON body needs "image": a base64 string of a JPEG/PNG'
                )
            text = doc["image"]
            if text.startswith("data:"):  # a data URL as a browser's FileReader gives it
                text = text.partition(",")[2]
            try:
                image = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "bad_base64", '"image" is not valid base64') from None
            for k in OPTIONS:
                if k in doc:
                    opts[k] = doc[k]
        elif ctype in RAW_TYPES or not ctype:
            image = await _read_limited(request.content, lim.max_bytes, lim.max_bytes)
        else:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"Content-Type {ctype!r}: send multipart/form-data with an `image` field, "
                "image/jpeg, image/png, application/octet-stream or application/json",
            )
        if not image:
            raise ApiError(400, "empty", "empty upload: no image bytes")
        return image, self._options(opts)

    async def _read_multipart(self, request, opts: dict) -> bytes:
        lim = self.limits
        try:
            reader = await request.multipart()
            image = None
            while True:
                part = await reader.next()
                if part is None:
                    break
                name = part.name or ""
                if name in ("image", "file") and image is None:
                    image = await _read_limited(part, lim.max_bytes, lim.max_bytes)
                elif name in OPTIONS:
                    opts[name] = (await _read_limited(part, 64, 64)).decode("ascii", "replace")
                else:
                    await part.release()  # an unknown field is read past, not kept
        except ApiError:
            raise
        except (ValueError, AssertionError, RuntimeError) as exc:
            raise ApiError(400, "bad_multipart", f"malformed multipart body ({exc})") from None
        if image is None:
            raise ApiError(
                400, "no_image", "multipart form without an `image` field (curl -F image=@x.jpg)"
            )
        return image

    def _options(self, opts: dict) -> dict:
        n_labels = 7
        if self._analyzer is not None:
            n_labels = len(self._analyzer.labels)
        top = opts.get("top_k", self.limits.top_k_default)
        try:
            top_k = int(top)
        except (TypeError, ValueError):
            got = str(top)[:20]
            raise ApiError(400, "bad_option", f"top_k: expected an integer, got {got!r}") from None
        if not 1 <= top_k <= n_labels:
            raise ApiError(400, "bad_option", f"top_k: must be 1..{n_labels}, got {top_k}")
        scan = str(opts.get("scan", "photo")).strip().lower()
        if scan not in SCANS:
            raise ApiError(400, "bad_option", f"scan: photo or frame, got {scan[:20]!r}")
        return {
            "crops": _flag(opts.get("crops", False), "crops"),
            "annotated": _flag(opts.get("annotated", False), "annotated"),
            "scan": scan,
            "top_k": top_k,
        }


async def _read_limited(stream, limit: int, image_limit: int) -> bytes:
    """Read a body or a multipart part, stopping with 413 as soon as it passes `limit`."""
    buf = bytearray()
    reader = getattr(stream, "read_chunk", None) or stream.read
    while True:
        chunk = await reader(CHUNK)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise ApiError(
                413,
                "too_large",
                f"upload too large: over {limit} bytes (the limit is {image_limit} bytes of image)",
            )


def _error(exc: ApiError, request_id: str):
    from aiohttp import web

    return web.json_response(
        {"error": exc.message, "code": exc.code, "request_id": request_id},
        status=exc.status,
        headers={**NO_STORE, **exc.headers},
    )


def _static(name: str) -> bytes:
    from importlib import resources

    return resources.files("emotion_edge.web").joinpath("static", name).read_bytes()


def _compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def make_analyze_api(cfg, camera_less: bool = False, limits: AnalyzeLimits | None = None):
    """The API for a validated AppConfig: its own detector and classifier, built by the
    daemon's factories from the config's [detector] and [classifier] tables (never the
    pipeline's instances, which only the pipeline thread may call)."""
    lim = limits or AnalyzeLimits(top_k_default=cfg.tracking.top_k)

    def factory() -> Analyzer:
        return Analyzer(cfg, limits=lim.image, top_k=lim.top_k_default)

    return AnalyzeAPI(factory, lim, camera_less=camera_less)
