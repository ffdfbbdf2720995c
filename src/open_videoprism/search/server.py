"""``videoprism serve``: a search page and a JSON API over one database.

The standard library's threaded HTTP server is enough for one person's videos
and adds no dependency. Routes:

* ``/?q=TEXT&k=K`` the page (server-rendered results, so it works without JS);
* ``/api/search?q=TEXT&k=K`` or ``?like=MOMENT_ID`` JSON hits;
* ``/thumb/ID`` a moment's JPEG, ``/video/ID`` a video file (with Range
  requests, so the browser can seek to a moment's start).

Only files recorded in the database are ever served: ``/video/ID`` looks the
path up by id, and no route takes a path from the request.
"""

from __future__ import annotations

import html
import json
import mimetypes
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

from open_videoprism.errors import UserError
from open_videoprism.search.query import Hit, SearchIndex

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#fafafa;color:#222}
header{background:#1f3b57;color:#fff;padding:14px 24px}header a{color:#fff;text-decoration:none;font-weight:600}
form{display:inline-block;margin-left:24px}input[type=text]{width:420px;padding:7px;font-size:15px;border:0;border-radius:4px}
button{padding:7px 14px;font-size:15px;border:0;border-radius:4px;background:#f0b429;cursor:pointer}
main{padding:16px 24px}.meta{color:#666;font-size:13px;margin-bottom:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:14px}
.hit{background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002;overflow:hidden}
.hit img,.hit video{width:100%;height:150px;object-fit:cover;background:#000;display:block;cursor:pointer}
.cap{padding:6px 8px;font-size:13px}.cap .t{font-weight:600}.cap .p{color:#555;word-break:break-all}.cap .s{float:right;color:#1f3b57}
"""

_SCRIPT = """
function play(el){const v=document.createElement('video');v.controls=true;v.autoplay=true;
v.src=el.dataset.src;el.replaceWith(v);}
"""


def _clock(t: float) -> str:
    m, s = divmod(max(t, 0.0), 60)
    return f"{int(m)}:{s:04.1f}"


def render_page(query: str, hits: list[Hit], total: int, k: int) -> str:
    """The search page: a box and the hits as thumbnails with times; a click plays the moment."""
    cards = []
    for h in hits:
        src = f"/video/{h.file_id}#t={h.start:.2f},{h.end:.2f}"
        span = "whole video" if h.whole else f"{_clock(h.start)}–{_clock(h.end)}"
        cards.append(
            f'<div class="hit"><img src="/thumb/{h.moment_id}" alt="moment at {h.start:.1f}s" data-src="{html.escape(src)}" '
            f'onclick="play(this)" title="play from {_clock(h.start)}">'
            f'<div class="cap"><span class="s">{h.score:.3f}</span><span class="t">{span}</span>'
            f'<div class="p"><a href="{html.escape(src)}">{html.escape(Path(h.path).name)}</a></div></div></div>'
        )
    info = (f"{len(hits)} best of {total} moments for “{html.escape(query)}”" if query
            else f"{total} moments indexed; describe what you are looking for")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>VideoPrism search</title>"
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
        "<header><a href='/'>VideoPrism search</a><form action='/' method='get'>"
        f"<input type='text' name='q' value='{html.escape(query, quote=True)}' placeholder='a dog catching a frisbee' autofocus> "
        f"<input type='hidden' name='k' value='{k}'><button type='submit'>Search</button></form></header>"
        f"<main><div class='meta'>{info}</div><div class='grid'>{''.join(cards)}</div></main></body></html>"
    )


class _Handler(BaseHTTPRequestHandler):
    index: SearchIndex
    lock: threading.Lock
    quiet = True

    def log_message(self, fmt: str, *args) -> None:  # noqa: D401 - keep the terminal clean
        if not self.quiet:
            super().log_message(fmt, *args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode(), "application/json")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        qs = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/":
                q = qs.get("q", "").strip()
                k = self._k(qs)
                hits = self._search(q, k) if q else []
                page = render_page(q, hits, len(self.index.ids), k)
                self._send(200, page.encode(), "text/html; charset=utf-8")
            elif url.path == "/api/search":
                k = self._k(qs)
                if "like" in qs:
                    row = (self.index.ids == int(qs["like"])).nonzero()[0]
                    if not len(row):
                        return self._error(404, f"no moment {qs['like']}")
                    hits = self.index.search_vector(self.index.embeddings[row[0]], k)
                else:
                    hits = self._search(qs.get("q", "").strip(), k)
                body = {"query": qs.get("q"), "hits": [h.to_json() | {"video": f"/video/{h.file_id}#t={h.start:.2f},{h.end:.2f}",
                                                                        "thumbnail": f"/thumb/{h.moment_id}"} for h in hits]}
                self._send(200, json.dumps(body).encode(), "application/json")
            elif url.path.startswith("/thumb/"):
                data = self.index.db.thumbnail(int(url.path.split("/")[2]))
                if not data:
                    return self._error(404, "no such thumbnail")
                self._send(200, data, "image/jpeg", {"Cache-Control": "max-age=3600"})
            elif url.path.startswith("/video/"):
                self._video(int(url.path.split("/")[2]))
            else:
                self._error(404, "not found")
        except (ValueError, IndexError):
            self._error(400, "bad request")
        except UserError as exc:
            self._error(400, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _k(self, qs: dict[str, str]) -> int:
        return max(1, min(int(qs.get("k", 24)), 200))

    def _search(self, q: str, k: int) -> list[Hit]:
        if not q:
            raise UserError("empty query: pass ?q=TEXT")
        with self.lock:  # one model forward at a time
            return self.index.search(q, k)

    def _video(self, file_id: int) -> None:
        path = self.index.db.file_path(file_id)  # only indexed files, looked up by id
        if path is None or not os.path.isfile(path):
            return self._error(404, "no such video in the index")
        size = os.path.getsize(path)
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].split(",")[0].partition("-")
            if a:
                start, end = int(a), min(int(b) if b else size - 1, size - 1)
            else:
                start = max(size - int(b), 0)
            if start > end:
                return self._send(416, b"", ctype, {"Content-Range": f"bytes */{size}"})
        extra = {"Accept-Ranges": "bytes", "Content-Disposition": f"inline; filename*=UTF-8''{quote(Path(path).name)}",
                 "Content-Length": str(end - start + 1)}
        if rng:
            extra["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.send_response(206 if rng else 200)
        self.send_header("Content-Type", ctype)
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as f:  # streamed: a large video never sits in memory
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


def make_server(index: SearchIndex, host: str = "127.0.0.1", port: int = 8765, quiet: bool = True) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0: any free port); call ``serve_forever()``."""
    handler = type("Handler", (_Handler,), {"index": index, "lock": threading.Lock(), "quiet": quiet})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None
    server.daemon_threads = True
    return server
