"""Server-side TLS contexts for the listeners (mTLS when a client CA is given)."""

from __future__ import annotations

import ssl

from forwarder.config import TlsServerConfig


def server_context(tls: TlsServerConfig | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(tls.client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def reload_context(ctx: ssl.SSLContext, tls: TlsServerConfig) -> None:
    """Load renewed certificate files into a live context: new handshakes use them, and
    connections already open keep theirs."""
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(tls.client_ca_file))
