"""Wait until the live view answers /healthz: the kiosk unit's start condition.

    python -m emotion_edge.web.healthcheck [--wait SECONDS] [URL]

URL defaults to http://127.0.0.1:8080/healthz. Exit 0 once it answers {"status": "ok"}, 1 when
it did not within --wait seconds (0: try once), 2 on a bad argument. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8080/healthz"


def probe(url: str, timeout: float = 2.0) -> str | None:
    """None when healthy, else why not (one line)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local URL
            body = json.loads(resp.read(65536) or b"{}")
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", None) or exc)
    return None if body.get("status") == "ok" else f"status {body.get('status')!r}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emotion_edge.web.healthcheck", description=__doc__)
    p.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    p.add_argument("--wait", type=float, default=0.0, metavar="S", help="keep trying this long")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="between tries")
    args = p.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        p.error(f"URL must start with http:// or https://, got {args.url!r}")
    deadline = time.monotonic() + max(0.0, args.wait)
    while True:
        why = probe(args.url)
        if why is None:
            return 0
        if time.monotonic() >= deadline:
            print(f"healthcheck: {args.url}: not healthy ({why})", file=sys.stderr)
            return 1
        time.sleep(max(0.05, args.interval))


if __name__ == "__main__":
    sys.exit(main())
