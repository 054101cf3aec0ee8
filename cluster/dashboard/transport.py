"""How the dashboard listens: a threading HTTP server on IPv4 or IPv6, TLS optional."""

from __future__ import annotations

import socket
import ssl
from http.server import ThreadingHTTPServer

HANDSHAKE_S = 10.0  # a TLS client that has not finished its handshake by then is dropped


class Server(ThreadingHTTPServer):
    """The threading HTTP server over IPv4 or IPv6 (the family of its host), with TLS done on
    each connection's thread, under `HANDSHAKE_S`: the accepting thread never waits on a
    client, so an idle or slow one holds up no other."""

    daemon_threads = True

    def __init__(self, host: str, port: int, handler, *, tls: ssl.SSLContext | None = None):
        self.tls = tls
        self.address_family = _family(host, port)
        super().__init__((host, port), handler)

    def finish_request(self, request, client_address) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            request.settimeout(HANDSHAKE_S)
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except OSError:  # no handshake, a bad one, or too slow: dropped
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            self.shutdown_request(wrapped)


def _family(host: str, port: int) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 host (`::1`, `::`, a name with only IPv6 addresses), else AF_INET."""
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"cannot listen on host {host!r}: {error}") from None
    families = [info[0] for info in found]
    return socket.AF_INET if socket.AF_INET in families else families[0]
