"""TLS for DICOM (PS3.15 B.1, "basic TLS secure transport"): pynetdicom's ssl contexts.

Receiving: ``--tls-cert``/``--tls-key`` make the Store SCP speak TLS only; ``--tls-ca``
also requires every caller to present a certificate signed by that CA (mutual TLS).
Forwarding: ``--forward-tls`` connects to the destination over TLS and checks its
certificate (against ``--forward-tls-ca``, else the system's CAs) and that it names the
destination's host; ``--forward-tls-cert``/``--forward-tls-key`` present a client
certificate. TLS 1.2 is the oldest version offered.
"""

from __future__ import annotations

import ssl

from runtime.node.config import ConfigError, NodeConfig


def server_context(config: NodeConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
        if config.tls_ca is not None:
            context.load_verify_locations(cafile=config.tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"--tls-cert/--tls-key/--tls-ca: {error}") from None
    return context


def client_context(config: NodeConfig) -> ssl.SSLContext | None:
    if not config.forward_tls:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.forward_tls_ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if config.forward_tls_cert is not None:
            context.load_cert_chain(config.forward_tls_cert, config.forward_tls_key)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"--forward-tls-ca/--forward-tls-cert/--forward-tls-key: {error}") from None
    return context
