"""The [web] live view server: aiohttp on its own thread with its own asyncio loop.

Routes (the kiosk screen and monitoring rely on these paths):

  GET /              the page (static/index.html; its script and style under /static/)
  GET /stream.mjpg   the annotated picture, multipart/x-mixed-replace JPEG, <= max_fps
  GET /api/state     JSON: faces in view (every label's smoothed probability, box, id, tracked
                     time), fps, latency, face count, device id, model version, camera, MQTT
  GET /api/live      the same JSON pushed as Server-Sent Events at <= max_fps
  GET /healthz       {"status": "ok", ...} while the server runs (no faces, no token needed)
  POST /login        the sign-in form's token -> a session cookie (only with a token)

Cost: a ticker task runs only while a picture stream or push channel is open. Each tick takes
the newest snapshot the frame tap kept, encodes it once (on one encoder thread, never on the
pipeline's) and hands the same bytes to every client; a client still busy with an older frame
skips the ones in between, and one that accepts nothing for `send_timeout_s` is dropped, so a
slow or stuck client costs neither the pipeline nor memory. The picture and the pushed state of
a tick come from the same snapshot and are released together; each picture part carries the
snapshot's `X-Frame-Seq`, the state its `frame.seq`, so the page pairs them.

Viewer limit: at most `max_clients` viewers at once (503 "viewer limit reached (N)" beyond). A
page sends `?viewer=ID` (random per page load) on its picture stream and its push channel, so
its two connections count as one viewer; a connection without an id is a viewer of its own.

Privacy: loopback by default. A non-loopback host needs `allow_remote = true` and a token
(validated at start-up); every route but /healthz then needs the token, as
`Authorization: Bearer TOKEN` or the cookie the sign-in form sets. No access log is written,
so neither tokens nor addresses of viewers end up in the journal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

from emotion_edge.config.tables import WebConfig
from emotion_edge.config.validate import is_loopback
from emotion_edge.errors import EmotionEdgeError
from emotion_edge.track.events import FaceObservation
from emotion_edge.video.frames import Frame
from emotion_edge.web.live import FaceInfo, LiveView, render_jpeg, state_json
from emotion_edge.web.request_errors import RequestErrorLog, read_form_token

if TYPE_CHECKING:
    from emotion_edge.web.analyze_api import AnalyzeAPI

log = logging.getLogger(__name__)

BOUNDARY = "frame"
COOKIE = "ee_session"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# Same-origin only, nothing inline: the page loads nothing from anywhere else, ever.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
NO_STORE = {"Cache-Control": "no-store"}
# Request limits: the page sends nothing big; anything larger is refused by aiohttp's parser.
MAX_BODY = 4096
MAX_LINE = 4096
MAX_FIELD = 4096
MAX_HEADERS = 48
HEARTBEAT_S = 1.0  # push channel: send at least this often, changed or not
# A page's viewer id; its stream and push channel, and a reconnect overlapping a connection the
# server has not yet seen die, share one viewer slot.
VIEWER_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
CONNECTIONS_PER_VIEWER = 4
STATUS_EVERY_S = 0.5  # capture/output figures are read at most this often

Status = Callable[[], dict]


class WebError(EmotionEdgeError):
    """The server cannot start (port in use, address not on this machine): exit code 2."""


def session_value(token: str) -> str:
    """Cookie value for a token: derived, so the cookie is not the token itself."""
    return hashlib.sha256(f"emotion-edge-web-session:{token}".encode()).hexdigest()


class WebServer:
    """The live view server; implements the pipeline's FrameTap (on_frame, close)."""

    def __init__(
        self,
        cfg: WebConfig,
        *,
        device_id: str,
        model_version: str,
        labels: tuple[str, ...],
        face_info: FaceInfo,
        status: Status,
        token: str = "",
        analyze: AnalyzeAPI | None = None,
        detector_kind: str = "",
    ) -> None:
        self.cfg = cfg
        self.detector_kind = detector_kind  # for the page's "faces too far" hint
        self.device_id = device_id
        self.model_version = model_version
        self.labels = tuple(labels)
        self.view = LiveView(face_info)
        self._status_fn = status
        self._token = token
        self.analyze = analyze  # POST /api/v1/analyze and its page (web/analyze_api.py)
        self._session = session_value(token) if token else ""
        self._static = self._load_static()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._encoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="web-encode")
        self.url = ""
        self.port = cfg.port
        # shared products of the ticker, replaced (never mutated) each tick
        self._jpeg: tuple[int, int, bytes] = (0, 0, b"")  # (snapshot seq, frame index, JPEG)
        self._jpeg_event: asyncio.Event | None = None
        self._state: tuple[int, bytes] = (0, b"")
        self._state_event: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._status: dict = {}
        self._status_at = 0.0
        # figures (web thread only)
        self.streams = 0
        self.pushes = 0
        self.frames_encoded = 0
        # pictures published to the streams, and those a stream client was still busy for
        # (it gets the newest one next; summed over clients): not pipeline frames between ticks
        self._jpeg_n = 0
        self.stream_frames_missed = 0
        self.clients_dropped = 0
        self.refused = 0
        # malformed requests and unreadable sign-in forms: counted, logged without content
        self.request_errors = RequestErrorLog()
        self._viewers: dict[str, int] = {}  # viewer key -> open connections
        self.encode_ms: deque[float] = deque(maxlen=200)

    # -- FrameTap ------------------------------------------------------------------------------

    def on_frame(self, frame: Frame, faces: list[FaceObservation]) -> None:
        self.view.on_frame(frame, faces)

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving (any thread); open streams end, the port is released."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(self._stopping.set)
            thread.join(timeout)
        self._encoder.shutdown(wait=False, cancel_futures=True)
        self.view.close()
        if self.analyze is not None:
            self.analyze.close()
        self.request_errors.flush()

    # -- start-up ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Bind and serve on the web thread; WebError when the address cannot be used."""
        if self._thread is not None:
            raise RuntimeError("WebServer already started")
        started: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name="web", daemon=True)
        self._thread.start()
        try:
            started.result(timeout)
        except OSError as exc:
            raise WebError(
                f"web: cannot listen on {self.cfg.host}:{self.cfg.port} "
                f"({exc.strerror or exc}); choose another web.port or --web [HOST:]PORT"
            ) from None
        where = "this machine only" if is_loopback(self.cfg.host) else "the network"
        if not is_loopback(self.cfg.host):
            log.warning(
                "web: live view listening on %s:%d, reachable from the network: faces on the "
                "camera are shown to anyone who has the access token",
                self.cfg.host,
                self.port,
            )
        log.info(
            "web: live view on %s (%s), <= %g fps, %d px wide, <= %d clients",
            self.url,
            where,
            self.cfg.max_fps,
            self.cfg.stream_width,
            self.cfg.max_clients,
        )

    def _run(self, started: concurrent.futures.Future) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = None
        try:
            try:
                runner = loop.run_until_complete(self._start())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                started.set_exception(exc)
                return
            started.set_result(True)
            loop.run_until_complete(self._serve())
        finally:
            if runner is not None:
                loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _start(self):
        from aiohttp import web

        self._stopping = asyncio.Event()
        self._jpeg_event = asyncio.Event()
        self._state_event = asyncio.Event()
        self._wake = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/stream.mjpg", self._stream)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_get("/api/live", self._live)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_post("/login", self._login)
        if self.analyze is not None:
            self.analyze.add_routes(app)
        runner = web.AppRunner(
            app,
            access_log=None,  # no access log: tokens, cookies and viewers stay out of the journal
            handle_signals=False,
            shutdown_timeout=1.0,
            max_line_size=MAX_LINE,
            max_field_size=MAX_FIELD,
            max_headers=MAX_HEADERS,
            keepalive_timeout=15,
            logger=self.request_errors,  # aiohttp's own logs raw header lines (tokens)
        )
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.host.strip("[]"), self.cfg.port, shutdown_timeout=1.0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        sockets = site._server.sockets if site._server else []  # noqa: SLF001 - the bound port
        if sockets:
            self.port = sockets[0].getsockname()[1]
        host = self.cfg.host.strip("[]")
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"
        return runner

    async def _serve(self) -> None:
        ticker = asyncio.ensure_future(self._ticker())
        try:
            await self._stopping.wait()
        finally:
            self._jpeg_event.set()  # wake every client so it sees `stopping` and returns
            self._state_event.set()
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    @staticmethod
    def _load_static() -> dict[str, tuple[bytes, str]]:
        out = {}
        for entry in resources.files("emotion_edge.web").joinpath("static").iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if entry.is_file() and suffix in STATIC_TYPES:
                out[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
        if "index.html" not in out:
            raise WebError("web: static/index.html missing from the installed package")
        return out

    # -- the ticker: one encode and one JSON per frame for all clients ------------------------

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.cfg.max_fps
        last_jpeg_seq = last_state_seq = -1
        last_state_at = 0.0
        while not self._stopping.is_set():
            if self.streams == 0 and self.pushes == 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            t0 = loop.time()
            snap = self.view.snapshot()
            seq = snap.seq if snap is not None else 0
            jpeg = None
            if self.streams and snap is not None and seq != last_jpeg_seq:
                last_jpeg_seq = seq
                try:
                    jpeg = await loop.run_in_executor(self._encoder, self._encode, snap)
                except Exception:  # noqa: BLE001 - one bad frame must not end the stream
                    log.exception("web: frame %d not encoded", snap.frame.index)
            body = None
            if self.pushes and (seq != last_state_seq or t0 - last_state_at >= HEARTBEAT_S):
                last_state_seq, last_state_at = seq, t0
                # the same snapshot as the picture, so labels and cards cannot disagree
                body = json.dumps(self._state_payload(snap), separators=(",", ":")).encode()
            # released together: a page gets a picture and its state in the same instant
            if jpeg is not None:
                self._jpeg = (seq, int(snap.frame.index), jpeg)
                self._jpeg_n += 1
                ev, self._jpeg_event = self._jpeg_event, asyncio.Event()
                ev.set()
            if body is not None:
                self._state = (self._state[0] + 1, body)
                ev, self._state_event = self._state_event, asyncio.Event()
                ev.set()
            await asyncio.sleep(max(0.0, period - (loop.time() - t0)))

    def _encode(self, snap) -> bytes:
        t0 = time.perf_counter()
        jpeg, _ = render_jpeg(snap, self.labels, self.cfg.stream_width, self.cfg.jpeg_quality)
        self.encode_ms.append((time.perf_counter() - t0) * 1000.0)
        self.frames_encoded += 1
        return jpeg

    def _status_now(self) -> dict:
        now = time.monotonic()
        if now - self._status_at >= STATUS_EVERY_S:
            try:
                self._status = self._status_fn()
            except Exception:  # noqa: BLE001 - figures are best effort
                log.debug("web: status not read", exc_info=True)
            self._status_at = now
        return self._status

    def web_stats(self) -> dict:
        enc = list(self.encode_ms)
        return {
            "streams": self.streams,
            "pushes": self.pushes,
            "max_clients": self.cfg.max_clients,
            "frames_encoded": self.frames_encoded,
            "stream_frames_missed": self.stream_frames_missed,
            "clients_dropped": self.clients_dropped,
            "refused": self.refused,
            "bad_requests": self.request_errors.count,
            "viewers": len(self._viewers),
            "encode_ms": round(sum(enc) / len(enc), 2) if enc else None,
            "max_fps": self.cfg.max_fps,
            "stream_width": self.cfg.stream_width,
        }

    def _state_payload(self, snap) -> dict:
        return state_json(
            snap,
            device_id=self.device_id,
            model_version=self.model_version,
            labels=self.labels,
            rates=self.view.rates(),
            status=self._status_now(),
            web=self.web_stats(),
            now=time.time(),
            detector_kind=self.detector_kind,
        )

    # -- guard: auth, headers ----------------------------------------------------------------

    def _authorized(self, request) -> bool:
        if not self._token:
            return True
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(
            auth[7:].strip().encode(), self._token.encode()
        ):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self._session.encode())

    @property
    def _guard(self):
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            open_paths = ("/healthz", "/login", "/static/style.css")
            if request.path not in open_paths and not self._authorized(request):
                if request.path in ("/", "/analyze") and request.method == "GET":  # pages
                    resp = self._page("login.html", status=401)
                else:
                    resp = web.json_response(
                        {"error": "unauthorized: send Authorization: Bearer TOKEN"}, status=401
                    )
            else:
                resp = await handler(request)
            if not resp.prepared:
                resp.headers.update(SECURITY_HEADERS)
            return resp

        return guard

    # -- routes --------------------------------------------------------------------------------

    def _page(self, name: str, status: int = 200):
        from aiohttp import web

        body, ctype = self._static[name]
        return web.Response(
            body=body, status=status, content_type=ctype, charset="utf-8", headers=NO_STORE
        )

    async def _index(self, request):
        from aiohttp import web

        if self.analyze is not None and self.analyze.camera_less:
            raise web.HTTPFound("/analyze")  # no camera: the analysis page is the front page
        return self._page("index.html")

    async def _static_file(self, request):
        from aiohttp import web

        name = request.match_info["name"]
        if name not in self._static or name.endswith(".html"):
            raise web.HTTPNotFound()
        body, ctype = self._static[name]
        return web.Response(
            body=body, content_type=ctype, charset="utf-8", headers={"Cache-Control": "no-cache"}
        )

    async def _healthz(self, request):
        from aiohttp import web

        cam = self._status_now().get("capture", {})
        return web.json_response(
            {
                "status": "ok",
                "device_id": self.device_id,
                "camera_open": cam.get("source_open"),
                "clients": self.streams + self.pushes,
                "viewers": len(self._viewers),
            },
            headers=NO_STORE,
        )

    async def _login(self, request):
        from aiohttp import web

        if not self._token:
            raise web.HTTPNotFound()
        given = await read_form_token(request, self.request_errors)
        if given is None:
            return self._page("login.html", status=400)
        if not given or not hmac.compare_digest(given.encode(), self._token.encode()):
            await asyncio.sleep(1.0)  # slows down guessing
            return self._page("login.html", status=401)
        resp = web.HTTPSeeOther("/")
        resp.set_cookie(
            COOKIE, self._session, httponly=True, samesite="Strict", max_age=30 * 86400, path="/"
        )
        return resp

    async def _api_state(self, request):
        from aiohttp import web

        view = self.view
        fresh = view.watched
        view.poke()
        snap = view.snapshot()
        if not fresh or snap is None:
            # nobody was watching, so no frame was kept: wait (briefly) for the next few, which
            # also give the frame rate something to go by
            target, deadline = view.seq + 3, time.monotonic() + 1.0
            while view.seq < target and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            snap = view.snapshot()
        return web.json_response(self._state_payload(snap), headers=NO_STORE, dumps=_compact_dumps)

    def _admit(self, request) -> tuple[str, object]:
        """(viewer key, None) for an admitted connection (release it with `_leave`), or
        ("", a 503 response) when `max_clients` other viewers are watching."""
        from aiohttp import web

        given = request.query.get("viewer", "")
        key = f"page:{given}" if VIEWER_ID.fullmatch(given) else f"conn:{id(request)}"
        held = self._viewers.get(key, 0)
        if held == 0 and len(self._viewers) >= self.cfg.max_clients:
            reason = f"viewer limit reached ({self.cfg.max_clients})"
        elif held >= CONNECTIONS_PER_VIEWER:
            reason = f"viewer limit reached ({self.cfg.max_clients}): too many connections"
        else:
            self._viewers[key] = held + 1
            return key, None
        self.refused += 1
        return "", web.json_response(
            {
                "error": f"{reason}; raise web.max_clients to admit more",
                "max_clients": self.cfg.max_clients,
            },
            status=503,
            headers={"Retry-After": "5", **NO_STORE},
        )

    def _leave(self, key: str) -> None:
        n = self._viewers.get(key, 0) - 1
        if n > 0:
            self._viewers[key] = n
        else:
            self._viewers.pop(key, None)

    async def _send(self, request, resp, data: bytes) -> bool:
        """Write one part; False (client gone or dropped) ends the stream."""
        try:
            await asyncio.wait_for(resp.write(data), self.cfg.send_timeout_s)
            return True
        except (asyncio.TimeoutError, TimeoutError):
            self.clients_dropped += 1
            log.info("web: dropped a client that accepted nothing for %gs", self.cfg.send_timeout_s)
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        if request.transport is not None:
            request.transport.abort()
        return False

    async def _stream(self, request):
        from aiohttp import web

        viewer, refused = self._admit(request)
        if refused is not None:
            return refused
        resp = web.StreamResponse(
            headers={
                "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                "Pragma": "no-cache",
                **NO_STORE,
                **SECURITY_HEADERS,
            }
        )
        self.streams += 1
        self.view.hold()
        self._wake.set()
        try:
            await resp.prepare(request)
            # Each part ends with the next boundary, so a browser shows it at once instead of
            # waiting for the following frame to learn where this one ended.
            if not await self._send(request, resp, f"--{BOUNDARY}\r\n".encode()):
                return resp
            last = last_n = 0
            while not self._stopping.is_set():
                seq, index, jpeg = self._jpeg
                n = self._jpeg_n
                if seq == last:
                    ev = self._jpeg_event
                    try:
                        await asyncio.wait_for(ev.wait(), 5.0)
                    except (asyncio.TimeoutError, TimeoutError):
                        pass
                    continue
                if last_n:
                    self.stream_frames_missed += max(0, n - last_n - 1)
                last, last_n = seq, n
                head = (
                    f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                    f"X-Frame-Seq: {seq}\r\nX-Frame-Index: {index}\r\n\r\n"
                ).encode()
                if not await self._send(
                    request, resp, head + jpeg + f"\r\n--{BOUNDARY}\r\n".encode()
                ):
                    break
        finally:
            self.streams -= 1
            self._leave(viewer)
            self.view.release()
        return resp

    async def _live(self, request):
        from aiohttp import web

        viewer, refused = self._admit(request)
        if refused is not None:
            return refused
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "X-Accel-Buffering": "no",
                **NO_STORE,
                **SECURITY_HEADERS,
            }
        )
        self.pushes += 1
        self.view.hold()
        self._wake.set()
        try:
            await resp.prepare(request)
            if not await self._send(request, resp, b"retry: 2000\n\n"):
                return resp
            last = 0
            while not self._stopping.is_set():
                n, body = self._state
                if n == last:
                    ev = self._state_event
                    try:
                        await asyncio.wait_for(ev.wait(), 5.0)
                    except (asyncio.TimeoutError, TimeoutError):
                        pass
                    continue
                last = n
                if not await self._send(request, resp, b"data: " + body + b"\n\n"):
                    break
        finally:
            self.pushes -= 1
            self._leave(viewer)
            self.view.release()
        return resp


def _compact_dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))
