"""`paretune dashboard STUDY [STUDY...]`: the subcommand, light to import (the server loads
when it runs)."""

from __future__ import annotations

import socket
import time


def add_parser(commands) -> None:
    """The `dashboard` subcommand on `commands` (argparse subparsers)."""
    board = commands.add_parser("dashboard", help="a web page following studies live")
    board.add_argument("study", nargs="+", help="study folders")
    board.add_argument(
        "--host", default="127.0.0.1", help="another host needs --token-file and TLS"
    )
    board.add_argument("--port", type=int, default=8750, help="0 picks a free port")
    board.add_argument("--token-file", help="a file holding the token the page must send")
    board.add_argument("--tls-cert", help="PEM certificate (with --tls-key) for HTTPS")
    board.add_argument("--tls-key", help="PEM private key")
    board.add_argument("--poll", type=float, default=2.0, help="seconds between page updates")
    board.set_defaults(func=_cmd_dashboard)


# hosts that mean "every interface": a browser cannot open them, but this machine's loopback
ANY_HOST = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}


def address(host: str, port: int, *, tls: bool, token: bool) -> str:
    """What to open in a browser for a dashboard listening on `host:port`."""
    scheme = "https" if tls else "http"
    fragment = "#token=TOKEN" if token else ""
    if host not in ANY_HOST:
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}/{fragment}"
    other = f"{scheme}://{socket.gethostname()}:{port}/{fragment}"
    return (
        f"{scheme}://{ANY_HOST[host]}:{port}/{fragment}, listening on all interfaces "
        f"(from another machine: {other} or this host's address)"
    )


def _cmd_dashboard(args) -> int:
    from cluster.dashboard.server import serve
    from cluster.remote.wire import Security

    security = Security.from_files(args.token_file, args.tls_cert, args.tls_key)
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    server, port = serve(
        args.study, host=args.host, port=args.port, token=security.token, tls=tls, poll_s=args.poll
    )
    where = address(args.host, port, tls=bool(tls), token=bool(security.token))
    print(f"dashboard of {', '.join(args.study)} on {where} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
    return 0
