"""The study server: aiohttp on loopback, one participant session at a time.

Routes:
  GET  /                     researcher's start page (participant code, group, metadata)
  GET  /run                  the participant's page (jsPsych: consent, full screen, clips,
                             ratings, thanks); the session token is in the URL fragment
  GET  /control              researcher's pause / resume / abort buttons
  GET  /static/...           the pages' script and style, jsPsych under /static/vendor/
  GET  /clips/TOKEN/N.ext    the session's N-th clip (Range requests: the browser seeks)
  GET  /api/study            study name, groups, metadata fields, a fresh participant code
  POST /api/sessions         start a session {participant, group, fields} -> {token, ...}
  GET  /api/sessions/TOKEN   the page's configuration (clip order, fixation, ratings, texts)
  POST /api/clock            {"t": this machine's epoch seconds} (the page's clock pings)
  POST /api/sessions/TOKEN/consent|stimulus|end|heartbeat
  GET  /api/control, POST /api/control {"action": pause|resume|abort}
  GET  /healthz

Privacy: loopback by default (a non-loopback address needs --allow-remote); no access log;
nothing is loaded from elsewhere (CSP). A page that stops sending heartbeats for
`abort_after_s` (closed, crashed, the laptop slept) ends its session as `aborted`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import secrets
import time
from datetime import datetime
from pathlib import Path

from aiohttp import web
from emotion_edge_study.session import Session, SessionError
from emotion_edge_study.sinks import MarkerSink
from emotion_edge_study.studyfile import Study, clip_order, new_participant_code

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# Same origin only. jsPsych's plugins write style attributes into their HTML, so styles
# need 'unsafe-inline'; scripts do not (no inline script, no eval anywhere). jsPsych's
# style sheet carries its fonts as data: URLs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; media-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
MAX_BODY = 64 * 1024
PAGES = {"/": "start.html", "/run": "run.html", "/control": "control.html"}


def _load_static() -> dict[str, tuple[bytes, str]]:
    files = {}
    for p in STATIC_DIR.rglob("*"):
        ctype = STATIC_TYPES.get(p.suffix)
        if p.is_file() and ctype:
            files[p.relative_to(STATIC_DIR).as_posix()] = (p.read_bytes(), ctype)
    return files


class StudyServer:
    def __init__(
        self,
        study: Study,
        sink: MarkerSink,
        device_id: str,
        *,
        abort_after_s: float = 10.0,
        on_session_end=None,
    ):
        self.study = study
        self.sink = sink
        self.device_id = device_id
        self.abort_after_s = abort_after_s
        self.on_session_end = on_session_end
        self.static = _load_static()
        self.session: Session | None = None
        self.sessions_ended = 0

    # -- app -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._headers])
        r = app.router
        for path in PAGES:
            r.add_get(path, self._page)
        r.add_get("/static/{name:.+}", self._static)
        r.add_get("/clips/{token}/{name}", self._clip)
        r.add_get("/healthz", self._healthz)
        r.add_get("/api/study", self._api_study)
        r.add_post("/api/sessions", self._api_new_session)
        r.add_get("/api/sessions/{token}", self._api_session)
        r.add_post("/api/sessions/{token}/{what}", self._api_session_post)
        r.add_post("/api/clock", self._api_clock)
        r.add_get("/api/control", self._api_control_get)
        r.add_post("/api/control", self._api_control_post)
        app.on_startup.append(self._start_watchdog)
        return app

    @web.middleware
    async def _headers(self, request, handler):
        try:
            resp = await handler(request)
        except SessionError as exc:
            resp = web.json_response({"error": str(exc)}, status=409)
        except (ValueError, KeyError, TypeError) as exc:
            resp = web.json_response({"error": f"bad request: {exc}"}, status=400)
        resp.headers.update(SECURITY_HEADERS)
        return resp

    async def _start_watchdog(self, app) -> None:
        app["watchdog"] = asyncio.get_running_loop().create_task(self._watchdog())

    async def _watchdog(self) -> None:
        """A page that went silent (closed, crashed) ends its session as aborted, stamped
        at its last heartbeat."""
        while True:
            await asyncio.sleep(0.5)
            s = self.session
            if s is None or s.state == "ended":
                continue
            silent = time.monotonic() - s.last_seen
            if silent > self.abort_after_s:
                log.warning(
                    "session %s: no heartbeat for %.1f s: the page is gone, ending it as aborted",
                    s.session_id,
                    silent,
                )
                self._end(s, time.time() - silent, "aborted")

    def _end(self, s: Session, ts: float | None, status: str) -> None:
        if s.end(ts, status):
            self._ended(s)

    def _ended(self, s: Session) -> None:
        self.sessions_ended += 1
        log.info("session %s ended: %s", s.session_id, s.status)
        if self.on_session_end is not None:
            self.on_session_end(s)

    # -- pages -----------------------------------------------------------------------------

    async def _page(self, request):
        body, ctype = self.static[PAGES[request.path]]
        return web.Response(body=body, content_type=ctype)

    async def _static(self, request):
        item = self.static.get(request.match_info["name"])
        if item is None:
            raise web.HTTPNotFound()
        return web.Response(body=item[0], content_type=item[1])

    async def _clip(self, request):
        s = self._session_of(request.match_info["token"])
        stem = request.match_info["name"].split(".", 1)[0]
        if not stem.isdigit() or int(stem) >= len(s.order):
            raise web.HTTPNotFound()
        path = s.order[int(stem)].path
        if not path.is_file():
            log.error("clip %s: %s is missing", s.order[int(stem)].name, path)
            raise web.HTTPNotFound()
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Type": ctype})

    async def _healthz(self, request):
        return web.json_response({"status": "ok", "study": self.study.name})

    # -- api -------------------------------------------------------------------------------

    def _session_of(self, token: str) -> Session:
        s = self.session
        if s is None or not secrets.compare_digest(s.token, token):
            raise web.HTTPNotFound(text="no such session")
        return s

    async def _json(self, request) -> dict:
        try:
            data = await request.json()
        except json.JSONDecodeError:
            raise ValueError("the body is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data

    async def _api_study(self, request):
        st = self.study
        return web.json_response(
            {
                "study": st.name,
                "groups": list(st.groups),
                "metadata": list(st.metadata),
                "clips": [c.name for c in st.clips],
                "order": st.order,
                "participant": new_participant_code(),
                "session": self._session_summary(),
            }
        )

    def _session_summary(self) -> dict | None:
        s = self.session
        if s is None:
            return None
        return {
            "session": s.session_id,
            "participant": s.participant,
            "state": s.state,
            "status": s.status,
            "paused": s.paused,
        }

    async def _api_new_session(self, request):
        data = await self._json(request)
        cur = self.session
        if cur is not None and cur.state != "ended":
            raise SessionError(f"session {cur.session_id} is still {cur.state}")
        participant = str(data.get("participant") or new_participant_code()).strip()
        if not 0 < len(participant) <= 64 or any(ch in participant for ch in "/\\\x00\n"):
            raise ValueError("participant code: 1-64 characters, no slashes")
        group = str(data.get("group") or "").strip() or None
        if self.study.groups and group not in self.study.groups:
            raise ValueError(f"group must be one of {', '.join(self.study.groups)}")
        raw_fields = data.get("fields") or {}
        if not isinstance(raw_fields, dict):
            raise ValueError("fields must be an object")
        fields = {k: str(raw_fields.get(k, ""))[:200] for k in self.study.metadata}
        started = datetime.now().strftime("%Y%m%dT%H%M%S")
        s = Session(
            study=self.study,
            device_id=self.device_id,
            session_id=f"{self.study.name}-{participant}-{started}"[:200],
            token=secrets.token_urlsafe(18),
            participant=participant,
            group=group,
            fields=fields,
            order=clip_order(self.study, participant),
            sink=self.sink,
        )
        self.session = s
        log.info(
            "session %s ready: participant %s, group %s, order %s",
            s.session_id,
            participant,
            group,
            ", ".join(c.name for c in s.order),
        )
        return web.json_response({"token": s.token, "session": s.session_id, "run": "/run"})

    async def _api_session(self, request):
        s = self._session_of(request.match_info["token"])
        s.heartbeat()
        return web.json_response(s.config())

    async def _api_clock(self, request):
        return web.json_response({"t": time.time()})

    async def _api_session_post(self, request):
        s = self._session_of(request.match_info["token"])
        what = request.match_info["what"]
        if what == "heartbeat":
            return web.json_response(s.heartbeat())
        data = await self._json(request)
        s.heartbeat()
        if what == "consent":
            clock = data.get("clock") or {}
            if not isinstance(clock, dict):
                raise ValueError("clock must be an object")
            s.consent(
                bool(data.get("accepted")),
                data["ts"],
                clock,
                request.headers.get("User-Agent", ""),
            )
            if s.state == "ended":  # declined: the session ended with its start
                self._ended(s)
        elif what == "stimulus":
            tags = data.get("tags") or []
            meta = data.get("meta") or {}
            if not isinstance(tags, list) or not isinstance(meta, dict):
                raise ValueError("tags must be a list and meta an object")
            s.stimulus(str(data["action"]), str(data["label"]), data["ts"], tags, meta)
        elif what == "end":
            self._end(s, data.get("ts"), str(data.get("status", "completed")))
        else:
            raise web.HTTPNotFound()
        return web.json_response({"ok": True, "state": s.state, "paused": s.paused})

    async def _api_control_get(self, request):
        return web.json_response({"session": self._session_summary()})

    async def _api_control_post(self, request):
        data = await self._json(request)
        s = self.session
        if s is None:
            raise SessionError("no session")
        action = data.get("action")
        if action in ("pause", "resume"):
            s.set_paused(action == "pause")
            log.info("session %s %sd by the researcher", s.session_id, action)
        elif action == "abort":
            self._end(s, None, "aborted")
        else:
            raise ValueError("action must be pause, resume or abort")
        return web.json_response({"session": self._session_summary()})
