"""`paretune dashboard STUDY [STUDY...]`: the subcommand, light to import (the server loads
when it runs)."""

from __future__ import annotations

import time


def add_parser(commands) -> None:
    """The `dashboard` subcommand on `commands` (argparse subparsers)."""
    board = commands.add_parser("dashboard", help="a web page following studies live")
    board.add_argument("study", nargs="+", help="study folders")
    board.add_argument("--host", default="127.0.0.1", help="another host needs --token-file")
    board.add_argument("--port", type=int, default=8750, help="0 picks a free port")
    board.add_argument("--token-file", help="a file holding the token the page must send")
    board.add_argument("--tls-cert", help="PEM certificate (with --tls-key) for HTTPS")
    board.add_argument("--tls-key", help="PEM private key")
    board.add_argument("--poll", type=float, default=2.0, help="seconds between page updates")
    board.set_defaults(func=_cmd_dashboard)


def _cmd_dashboard(args) -> int:
    from cluster.dashboard.server import serve
    from cluster.remote.wire import Security

    security = Security.from_files(args.token_file, args.tls_cert, args.tls_key)
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    server, port = serve(
        args.study, host=args.host, port=args.port, token=security.token, tls=tls, poll_s=args.poll
    )
    scheme = "https" if tls else "http"
    where = f"{scheme}://{args.host}:{port}/" + ("#token=TOKEN" if security.token else "")
    print(f"dashboard of {', '.join(args.study)} on {where} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
    return 0
