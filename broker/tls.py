"""TLS for the broker's listening ports (gRPC, the agent endpoint, `/metrics`) and for its clients.

The gRPC port uses gRPC's own TLS (optionally mutual); the HTTP agent endpoint and `/metrics`
use an `ssl.SSLContext` with the same certificate. All pick up a renewed certificate/key pair on
the next handshake after the files change, so rotation needs no restart. Without TLS the
broker still serves, but says so when a port is reachable from other hosts.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.clock import Clock, SystemClock
from broker.config import TlsSettings
from broker.errors import BrokerError

log = logging.getLogger(__name__)

EXPIRY_WARNING = timedelta(days=14)
"""A server certificate that expires within this long is served with a warning to renew it."""


class TlsFileError(BrokerError):
    """A certificate, key or CA file is missing, unreadable or does not match; names the field."""


def _read(path: Path, field: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        hint = f" (`szb tls init {path.parent}` makes a test set)" if field.startswith("tls.") else ""
        raise TlsFileError(f"{field}: cannot read {path}: no such file{hint}") from exc
    except OSError as exc:
        raise TlsFileError(f"{field}: cannot read {path}: {exc.strerror or exc}") from exc
    if b"-----BEGIN " not in data:
        raise TlsFileError(f"{field}: {path} is not a PEM file")
    return data


def _valid_until(path: Path, now: datetime) -> datetime:
    """When `tls.cert_file`'s certificate expires; TlsFileError naming the file and the date when
    it is not valid at `now`: clients would refuse every handshake, blaming nothing in our logs."""
    try:
        cert = x509.load_pem_x509_certificate(_read(path, "tls.cert_file"))  # the leaf comes first
    except ValueError as exc:
        raise TlsFileError(f"tls.cert_file: {path} holds no readable certificate") from exc
    if now >= cert.not_valid_after_utc:
        raise TlsFileError(f"tls.cert_file: {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if now < cert.not_valid_before_utc:
        when = f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        raise TlsFileError(f"tls.cert_file: {path} is not valid before {when} (check the clock)")
    return cert.not_valid_after_utc


def _expiry_notice(path: Path, expires: datetime, now: datetime) -> str | None:
    left = expires - now
    when = f"{expires:%Y-%m-%d %H:%M} UTC"
    if left <= timedelta(0):  # (refused at start and at a reload; a running broker outlives it)
        return f"TLS certificate {path} expired on {when}: clients refuse every handshake; renew it"
    if left < EXPIRY_WARNING:
        return (f"TLS certificate {path} expires on {when} (in {left.total_seconds() / 86400:.1f} days): "
                "renew it; the broker loads the renewed files without a restart")
    return None


def _agent_ca_verifies(path: Path, server: ssl.SSLContext) -> None:
    """`tls.agent_ca_file` must verify the broker's certificate: instances are handed it to
    check the agent endpoint, and one that cannot would fail every cloud bootstrap. Proved
    by a TLS handshake in memory, the broker's context against a client trusting that file."""
    _read(path, "tls.agent_ca_file")
    try:
        client = ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:
        raise TlsFileError(f"tls.agent_ca_file: {path} holds no usable CA certificate: {exc.reason}") from exc
    client.check_hostname = False  # (the name is the instance's to check; the chain is ours)
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    ours = server.wrap_bio(pipes[0], pipes[1], server_side=True)
    theirs = client.wrap_bio(pipes[2], pipes[3], server_side=False)
    for _ in range(10):  # a handful of flights settles a TLS 1.2/1.3 handshake
        done = 0
        for end in (theirs, ours):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                raise TlsFileError(
                    f"tls.agent_ca_file: {path} does not verify the broker's certificate "
                    f"(tls.cert_file): {exc.reason}"
                ) from exc
        pipes[0].write(pipes[3].read())
        pipes[2].write(pipes[1].read())
        if done == 2:
            return


class ServerTls:
    """Holds the current certificate material; reloads it when the files change."""

    def __init__(self, settings: TlsSettings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()  # the wall clock: the peers check the dates by theirs
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self.expires = self._check_dates()  # before the CA check, which would blame the CA file
        self.http_context = self._load_http_context()  # also proves cert and key match
        self._grpc_config = self._load_grpc_config()
        if settings.agent_ca_file is not None:
            _agent_ca_verifies(settings.agent_ca_file, self.http_context)

    def _files(self) -> list[Path]:
        s = self.settings
        return [p for p in (s.cert_file, s.key_file, s.client_ca_file) if p is not None]

    def _files_stamp(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in self._files():
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((0, 0))
        return tuple(out)

    def _check_dates(self) -> datetime:
        """The certificate's expiry (refused when not valid now; a warning when it is soon)."""
        now = self.clock.now()
        expires = _valid_until(self.settings.cert_file, now)
        if (notice := _expiry_notice(self.settings.cert_file, expires, now)) is not None:
            log.warning("%s", notice)
        return expires

    def expiry_notice(self) -> str | None:
        """What an operator's status says while the certificate in use expires within
        EXPIRY_WARNING, or has expired under a broker that kept running (None: neither)."""
        return _expiry_notice(self.settings.cert_file, self.expires, self.clock.now())

    def _load_http_context(self) -> ssl.SSLContext:
        s = self.settings
        _read(s.cert_file, "tls.cert_file")
        _read(s.key_file, "tls.key_file")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(s.cert_file, s.key_file)
        except ssl.SSLError as exc:
            problem = f"{s.key_file} does not fit {s.cert_file}: {exc.reason}"
            raise TlsFileError(f"tls.key_file: {problem}") from exc
        return ctx

    def _load_grpc_config(self) -> grpc.ServerCertificateConfiguration:
        s = self.settings
        ca = s.client_ca_file
        roots = _certificates(ca, "tls.client_ca_file") if ca is not None else None
        pair = (_read(s.key_file, "tls.key_file"), _read(s.cert_file, "tls.cert_file"))
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=roots)

    def _changed(self) -> bool:
        """Reload when the files changed; False (keep the old pair) when the new one is bad."""
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        with self._lock:
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                expires = self._check_dates()
                http_context, grpc_config = self._load_http_context(), self._load_grpc_config()
            except TlsFileError as exc:
                log.error("TLS files changed but cannot be used, keeping the current ones: %s", exc)
                return False
            self.http_context, self._grpc_config, self.expires = http_context, grpc_config, expires
            log.info("TLS certificate reloaded from %s", self.settings.cert_file)
            return True

    def grpc_credentials(self) -> grpc.ServerCredentials:
        def fetch() -> grpc.ServerCertificateConfiguration | None:
            return self._grpc_config if self._changed() else None

        # gRPC calls `fetch` before each handshake; None keeps the current pair (its stub says
        # the callable never returns None, but the documented contract allows it).
        return grpc.dynamic_ssl_server_credentials(
            self._grpc_config,
            fetch,  # type: ignore[arg-type]
            require_client_authentication=self.settings.require_client_cert,
        )

    def current_http_context(self) -> ssl.SSLContext:
        """The context for the next handshake (a renewed certificate is loaded first)."""
        self._changed()
        return self.http_context

    def handshake(self, raw: socket.socket, timeout_s: float) -> ssl.SSLSocket:
        """TLS on one accepted connection, in the caller's thread; each read waits `timeout_s` at most.

        Never on a listening socket: there the handshake runs inside `accept()`, and one peer that
        connects and says nothing stalls every other caller. A failed handshake closes `raw`."""
        raw.settimeout(timeout_s)
        return self.current_http_context().wrap_socket(raw, server_side=True)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_plaintext(host: str, what: str) -> None:
    """Log a warning when a plaintext port is reachable beyond this host."""
    if not is_loopback(host or "127.0.0.1"):
        log.warning(
            # (not "bearer tokens": the log masker would take the next word for a token)
            "%s listens on %s WITHOUT TLS: tokens and agent secrets cross the network in "
            "clear text. Set `tls:` in broker.yaml (`szb tls init DIR` makes a test set).",
            what,
            host,
        )


def client_credentials(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> grpc.ChannelCredentials:
    """TLS credentials for a client: CA (None: system roots) and an optional client pair."""
    if bool(cert_file) != bool(key_file):
        raise TlsFileError("--tls-cert and --tls-key go together")
    roots = _certificates(Path(ca_file), "--tls-ca") if ca_file else None
    cert = _certificates(Path(cert_file), "--tls-cert") if cert_file else None
    key = _matching_key(Path(key_file), cert) if key_file and cert else None
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=cert)


# gRPC only finds a wrong file when it builds its handshaker, and then logs lines of its own
# ("Handshaker factory creation failed") before a vague UNAVAILABLE: the CLI checks them first.
def _certificates(path: Path, flag: str) -> bytes:
    """The file's bytes when it holds PEM certificates; TlsFileError naming the flag otherwise."""
    data = _read(path, flag)
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TlsFileError(f"{flag}: {path} holds no PEM certificate (a key or another file?)") from exc
    return data


def _matching_key(path: Path, cert_pem: bytes) -> bytes:
    """The key file's bytes when it is a PEM private key for the certificate's public key."""
    data = _read(path, "--tls-key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:  # (TypeError: it wants a password)
        raise TlsFileError(f"--tls-key: {path} holds no PEM private key without a password") from exc
    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    if key.public_key() != cert.public_key():
        raise TlsFileError(f"--tls-key: {path} does not match the certificate of --tls-cert")
    return data
