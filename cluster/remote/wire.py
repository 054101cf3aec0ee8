"""What both gRPC services share: the message envelope, bearer tokens, TLS, server and client
set-up.

A message is `u32 header length | JSON header | payload bytes` (a model, an Arrow stream):
grpcio carries bytes, so no generated code is needed, and every decode path is one function
that either returns a checked value or raises `BadMessage`. A method answers with one message,
or (a `Streaming` handler) with a stream of them.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import struct
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

MAX_HEADER = 1 << 20
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class BadMessage(ValueError):
    """A request that cannot be decoded or does not say what it must."""


class OverLimit(Exception):
    """A request past one of the server's limits (memory, time): RESOURCE_EXHAUSTED."""


class Refused(Exception):
    """A request this server is not set up to run (TorchScript without the flag):
    PERMISSION_DENIED."""


def encode(header: Mapping, payload: bytes = b"") -> bytes:
    text = json.dumps(dict(header), separators=(",", ":")).encode()
    return struct.pack("<I", len(text)) + text + payload


def decode(message: bytes) -> tuple[dict, bytes]:
    """`(header, payload)`; raises `BadMessage` for anything malformed."""
    if not isinstance(message, bytes | bytearray) or len(message) < 4:
        raise BadMessage("message shorter than its 4-byte header length")
    (size,) = struct.unpack_from("<I", message)
    if size > MAX_HEADER or 4 + size > len(message):
        raise BadMessage(f"header length {size} does not fit the {len(message)}-byte message")
    try:
        header = json.loads(bytes(message[4 : 4 + size]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadMessage(f"header is not JSON: {error}") from error
    if not isinstance(header, dict):
        raise BadMessage(f"header must be a JSON object, got {type(header).__name__}")
    return header, bytes(message[4 + size :])


def field(header: Mapping, name: str, kind, *, default=None, check=None):
    """`header[name]` of type `kind` (`default` when absent and not None), checked by `check`."""
    if name not in header:
        if default is not None:
            return default
        raise BadMessage(f"missing field {name!r}")
    value = header[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise BadMessage(f"field {name!r} has the wrong type: {type(value).__name__}")
    if check is not None and not check(value):
        raise BadMessage(f"field {name!r} is out of range: {value!r}")
    return value


@dataclass(frozen=True)
class Security:
    """Who may call: a bearer token (required off loopback, and then TLS too), TLS from a cert
    and key."""

    token: str | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def from_files(cls, token_file=None, cert_file=None, key_file=None) -> Security:
        if bool(cert_file) != bool(key_file):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        token = Path(token_file).read_text().strip() if token_file else None
        if token_file and not token:
            raise ValueError(f"token file {token_file} is empty")
        read = (lambda p: Path(p).read_bytes()) if cert_file else (lambda p: None)
        return cls(token, read(cert_file), read(key_file))


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposed(host: str, *, token: str | None, tls: bool, what: str) -> None:
    """The rule for every server here: off loopback, a bearer token, and with it TLS (else the
    token crosses the network in clear text); ValueError naming what is missing."""
    if is_loopback(host):
        return
    if not token:
        raise ValueError(
            f"the {what} on {host} (not loopback) needs a bearer token, or anyone who can reach "
            "it is served: give a token (--token-file), or keep the default host 127.0.0.1"
        )
    if not tls:
        raise ValueError(
            f"the {what} on {host} (not loopback) with a token needs TLS (--tls-cert and "
            "--tls-key): without it the token crosses the network in clear text"
        )


class _TokenCheck(grpc.ServerInterceptor):
    def __init__(self, token: str):
        self.expected = f"Bearer {token}".encode()

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self.refusal = grpc.unary_unary_rpc_method_handler(refuse)
        self.stream_refusal = grpc.unary_stream_rpc_method_handler(refuse)

    def intercept_service(self, continuation, details):
        given = dict(details.invocation_metadata).get("authorization", "").encode()
        handler = continuation(details)
        if hmac.compare_digest(given, self.expected):
            return handler
        streams = handler is not None and handler.response_streaming
        return self.stream_refusal if streams else self.refusal


@dataclass(frozen=True)
class Streaming:
    """A server-streaming method: `handler(request_bytes, context)` returns an iterator of
    messages (checking the request before it returns, so a bad one fails before any answer)."""

    handler: Callable[[bytes, grpc.ServicerContext], Iterator[bytes]]

    def __call__(self, request: bytes, context) -> Iterator[bytes]:
        return self.handler(request, context)


def serve(
    service: str,
    handlers: Mapping[str, Callable[[bytes, grpc.ServicerContext], bytes] | Streaming],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    security: Security | None = None,
    max_message: int = 4 << 20,
    workers: int = 16,
) -> tuple[grpc.Server, int]:
    """Start a server for `handlers` (method name -> `handler(request_bytes, context)`);
    returns it and its port. A host off loopback needs a token, and the token needs TLS."""
    security = security or Security()
    check_exposed(host, token=security.token, tls=bool(security.cert), what=f"{service} server")
    options = [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max(max_message, 64 << 20)),
    ]
    interceptors = [_TokenCheck(security.token)] if security.token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=options,
        interceptors=interceptors,
    )
    methods = {name: _method(handler) for name, handler in handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
    address = f"{host}:{port}"
    if security.cert:
        credentials = grpc.ssl_server_credentials([(security.key, security.cert)])
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise ValueError(f"cannot listen on {address}")
    server.start()
    return server, bound


def _method(handler):
    if isinstance(handler, Streaming):

        def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            with _statuses(context):
                yield from handler(request, context)

        return grpc.unary_stream_rpc_method_handler(stream)

    def run(request: bytes, context: grpc.ServicerContext) -> bytes:
        with _statuses(context):
            return handler(request, context)

    return grpc.unary_unary_rpc_method_handler(run)


@contextlib.contextmanager
def _statuses(context: grpc.ServicerContext):
    """A handler's `BadMessage` as INVALID_ARGUMENT, `OverLimit` as RESOURCE_EXHAUSTED,
    `Refused` as PERMISSION_DENIED, its `LookupError` as NOT_FOUND."""
    try:
        yield
    except BadMessage as error:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    except OverLimit as error:
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    except Refused as error:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))
    except LookupError as error:  # a KeyError's str() quotes its text: send the text
        context.abort(grpc.StatusCode.NOT_FOUND, str(error.args[0] if error.args else error))


def channel(
    address: str,
    *,
    token: str | None = None,
    root_cert: bytes | None = None,
    max_message: int = 256 << 20,
):
    """A channel to `host:port` (TLS when `root_cert` is given) sending the bearer token and
    receiving messages of at most `max_message` bytes."""
    options = [("grpc.max_receive_message_length", max_message)]
    if root_cert is None:
        return grpc.insecure_channel(address, options=options), _metadata(token)
    credentials = grpc.ssl_channel_credentials(root_certificates=root_cert)
    return grpc.secure_channel(address, credentials, options=options), _metadata(token)


def _metadata(token: str | None):
    return (("authorization", f"Bearer {token}"),) if token else ()


def call(chan_and_meta, service: str, method: str, message: bytes, *, timeout: float):
    chan, metadata = chan_and_meta
    stub = chan.unary_unary(f"/{service}/{method}")
    return stub(message, metadata=metadata, timeout=timeout)


def stream(chan_and_meta, service: str, method: str, message: bytes, *, timeout: float):
    """The messages a `Streaming` method answers, as they arrive."""
    chan, metadata = chan_and_meta
    stub = chan.unary_stream(f"/{service}/{method}")
    return stub(message, metadata=metadata, timeout=timeout)
