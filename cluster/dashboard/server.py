"""The dashboard's web server: the page and its static files, and JSON under `/api/` (the
studies, then per study, `/api/study/<number or name>/...`, a page of trials, the front,
best-so-far and one trial), on the standard library's threading HTTP server, IPv4 or IPv6.
Off loopback it needs a bearer token and TLS. A script sends the token as `Authorization:
Bearer TOKEN`; the page reads it once from its address (`#token=TOKEN`), trades it at
`POST /api/session` for an HttpOnly, SameSite=Strict cookie (Secure under TLS) and drops it
from the address. `transport.Server` listens."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from cluster.dashboard import views
from cluster.dashboard.feed import StudyFeed
from cluster.dashboard.transport import Server

STATIC = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}
CACHED = 64  # JSON answers kept per server, keyed by address and the studies' versions
IDLE_S = 60.0  # a connection silent this long between reads or writes is closed


class Dashboard:
    """The studies a server shows and what it answers; `answer(path, query)` is the API."""

    def __init__(self, feeds: list[StudyFeed], *, token: str | None = None, poll_s: float = 2.0):
        self.feeds, self.token, self.poll_s = feeds, token, poll_s
        # the page's cookie: derived from the token, so it is not the token itself
        self.session = token and hmac.new(token.encode(), b"dashboard", hashlib.sha256).hexdigest()
        self.hosts = {"127.0.0.1", "localhost", "[::1]"}  # without a token, the only `Host`s
        self.cache: OrderedDict = OrderedDict()
        self.cache_lock = threading.Lock()

    def allowed(self, authorization: str | None, host: str | None, session: str = "") -> bool:
        """With a token, whether the request carries it, or the session cookie given for it;
        without, whether it names a loopback host (a page elsewhere that rebinds its own name
        to 127.0.0.1 reads nothing)."""
        if self.token is None:
            return _hostname(host or "") in self.hosts
        given = (authorization or "").encode()
        bearer = hmac.compare_digest(given, f"Bearer {self.token}".encode())
        return bearer or hmac.compare_digest(session.encode(), self.session.encode())

    def answer(self, path: str, query: dict[str, str]) -> dict:
        """The JSON for `/api/...`; `views.NotFound` for what does not exist, ValueError for a bad
        request."""
        parts = path.strip("/").split("/")[1:]
        if parts == ["studies"]:
            self.refresh()
            summaries = [self._cached(f, ("summary",), views.summary) for f in self.feeds]
            return {"studies": summaries, "poll_s": self.poll_s}
        if len(parts) < 3 or parts[0] != "study":
            raise views.NotFound(f"no such address {path!r}")
        feed = self._feed(parts[1])
        feed.refresh()
        key = (path, tuple(sorted(query.items())))
        return self._cached(feed, key, lambda f: self._view(f, parts[2:], query))

    def _cached(self, feed: StudyFeed, key: tuple, make) -> dict:
        key = (id(feed), feed.version, *key)
        with self.cache_lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        body = make(feed)
        with self.cache_lock:
            self.cache[key] = body
            while len(self.cache) > CACHED:
                self.cache.popitem(last=False)
        return body

    def refresh(self) -> None:
        for feed in self.feeds:
            feed.refresh()

    def _feed(self, key: str) -> StudyFeed:
        """The study `key` names: its number among the feeds (from 0), or its name."""
        if key.isdigit() and int(key) < len(self.feeds):
            return self.feeds[int(key)]
        key = unquote(key)
        named = [feed for feed in self.feeds if feed.study.name == key]
        if len(named) > 1:
            raise ValueError(f"{len(named)} studies are named {key!r}: give its number instead")
        if not named:
            names = [feed.study.name for feed in self.feeds]
            raise views.NotFound(f"no study {key!r}: there are {len(names)}, from 0, named {names}")
        return named[0]

    def _view(self, feed: StudyFeed, rest: list[str], query: dict[str, str]) -> dict:
        if rest == ["trials"]:
            return views.trials_page(
                feed,
                sort=query.get("sort") or "trial",
                desc=query.get("desc") == "1",
                status=query.get("status") or None,
                where=query.get("where") or None,
                offset=_integer(query, "offset", 0),
                limit=_integer(query, "limit", 50),
            )
        if rest == ["front"]:
            return views.front(feed, query.get("cost") or None)
        if rest == ["best"]:
            return views.best_so_far(feed)
        if len(rest) == 2 and rest[0] == "trial":
            return views.trial_detail(feed, rest[1])
        raise views.NotFound(f"no such address /api/study/.../{'/'.join(rest)}")


def _hostname(host: str) -> str:
    """`Host` without its port: `[::1]:8750` -> `[::1]`, `localhost:8750` -> `localhost`."""
    return host[: host.find("]") + 1] if host.startswith("[") else host.split(":")[0]


def _integer(query: dict[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None


class Handler(BaseHTTPRequestHandler):
    server_version = "paretune-dashboard"
    timeout = IDLE_S
    dashboard: Dashboard  # set on the subclass `serve` makes

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        address = urlsplit(self.path)
        if not address.path.startswith("/api/"):
            self._static(address.path)
            return
        if not self._allowed():
            return
        query = {k: v[-1] for k, v in parse_qs(address.query).items()}
        try:
            self._json(HTTPStatus.OK, self.dashboard.answer(address.path, query))
        except views.NotFound as error:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(error)})
        except ValueError as error:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except Exception as error:  # the page shows it; the server keeps serving
            message = f"{type(error).__name__}: {error}"
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": message})

    def do_POST(self) -> None:  # noqa: N802
        """`/api/session`: the bearer token traded for the page's cookie."""
        if urlsplit(self.path).path != "/api/session":
            self._json(HTTPStatus.NOT_FOUND, {"error": "only /api/session takes a POST"})
        elif self._allowed():
            self._json(HTTPStatus.OK, {"session": bool(self.dashboard.session)}, cookie=True)

    def _allowed(self) -> bool:
        """Whether the request may read the studies; when not, it has been answered 401."""
        cookie = _cookie(self.headers.get("Cookie", ""), self._cookie_name())
        headers = self.headers.get("Authorization"), self.headers.get("Host")
        if self.dashboard.allowed(*headers, cookie):
            return True
        message = "missing or wrong bearer token" if self.dashboard.token else "wrong Host"
        self._json(HTTPStatus.UNAUTHORIZED, {"error": message})
        return False

    def _cookie_name(self) -> str:
        return f"paretune_{self.server.server_address[1]}"  # one per port: dashboards side by side

    def _static(self, path: str) -> None:
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        files = resources.files("cluster.dashboard") / "static"
        kind = STATIC.get(Path(name).suffix)
        if "/" in name or kind is None or not (files / name).is_file():
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        self._send(HTTPStatus.OK, (files / name).read_bytes(), kind)

    def _json(self, status: HTTPStatus, body: dict, *, cookie: bool = False) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self._send(status, data, "application/json", cookie=cookie)

    def _send(self, status: HTTPStatus, body: bytes, kind: str, *, cookie: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if cookie and self.dashboard.session:
            secure = "; Secure" if self.server.tls else ""
            value = f"{self._cookie_name()}={self.dashboard.session}"
            self.send_header("Set-Cookie", f"{value}; Path=/; HttpOnly; SameSite=Strict{secure}")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 (the standard library's name)
        pass  # a poll every two seconds is no news


def _cookie(header: str, name: str) -> str:
    """The value of cookie `name` in a `Cookie` header ("" when absent)."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def serve(
    folders: list[str | Path],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    tls: tuple[str, str] | None = None,
    poll_s: float = 2.0,
) -> tuple[Server, int]:
    """A started server (answering on its own thread; `shutdown()` stops it) for the study
    folders, and its port. A host other than loopback needs `token` and `tls`, a
    `(cert_file, key_file)` pair of PEM files."""
    from cluster.remote.wire import check_exposed

    check_exposed(host, token=token, tls=bool(tls), what="dashboard")
    if not folders:
        raise ValueError("give at least one study folder")
    if poll_s <= 0:
        raise ValueError(f"poll interval must be above 0 seconds, got {poll_s}")
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
    feeds = [StudyFeed(folder, min_interval=min(poll_s / 2, 0.5)) for folder in folders]
    dashboard = Dashboard(feeds, token=token, poll_s=poll_s)
    dashboard.refresh()
    handler = type("DashboardHandler", (Handler,), {"dashboard": dashboard})
    server = Server(host, port, handler, tls=context)
    threading.Thread(target=server.serve_forever, name="dashboard", daemon=True).start()
    return server, server.server_address[1]
