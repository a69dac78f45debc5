"""The live view: a local web page with the camera picture, face boxes and top-k emotions.

Off by default ([web] enabled, or --web [HOST:]PORT). `server.WebServer` serves the page and its
feeds on its own thread; `live.LiveView` is the pipeline's frame tap that keeps the newest frame
while someone watches; `healthcheck` waits for /healthz (the kiosk unit's start condition).
"""

from emotion_edge.web.server import WebError, WebServer

__all__ = ["WebError", "WebServer"]
