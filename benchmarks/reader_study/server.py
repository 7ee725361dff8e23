"""``serve``: run the app with uvicorn, on the loopback interface unless ``--host`` says otherwise.

The admin token is made once per study (STUDY/admin.token, readable by its owner only) and
printed at start, so the progress page works across restarts. Off loopback, readers sign in
only with tokens issued on the admin page, unless name sign-in is asked for.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.reader_study.app import Settings, create_app
from benchmarks.reader_study.manifest import Study
from benchmarks.reader_study.store import DATABASE, Store
from runtime.outputs import atomic_write

LOOPBACK = "127.0.0.1"
ADMIN_TOKEN = "admin.token"


class HostRefused(ValueError):
    """A non-loopback address that was not asked for with --host."""


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 / ::1 addresses."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: loopback only if every address it resolves to is
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def bind_host(host: str | None, explicit: bool) -> str:
    """The address to listen on: loopback by default; any other only when given explicitly
    (``--host``), else HostRefused."""
    chosen = host or LOOPBACK
    if not explicit and not is_loopback(chosen):
        raise HostRefused(f"refusing to listen on {chosen}: a non-loopback address needs --host {chosen} "
                          "given explicitly (readers on the network then sign in with tokens)")
    return chosen


def admin_token(study: Study) -> str:
    """The study's admin token, made (0600) on first use."""
    path = study.root / ADMIN_TOKEN
    existing = path.read_text().strip() if path.is_file() else ""
    if existing:
        return existing
    token = secrets.token_urlsafe(24)  # a new one, also where an interrupted first serve left the file empty
    atomic_write(path, lambda handle: handle.write(f"{token}\n".encode()), mode=0o600)
    return token


@dataclass(frozen=True)
class ServeOptions:
    """What ``serve`` was asked for."""

    host: str | None = None
    host_explicit: bool = False
    port: int = 8765
    name_signin: bool | None = None  # None: on loopback only
    certfile: Path | None = None
    keyfile: Path | None = None


def serve(study: Study, options: ServeOptions, log: Callable[[str], None] = print) -> None:
    """Run the server until interrupted; HostRefused before binding anything."""
    import uvicorn

    host = bind_host(options.host, options.host_explicit)
    local = is_loopback(host)
    name_signin = local if options.name_signin is None else options.name_signin
    token = admin_token(study)
    tls = options.certfile is not None
    app = create_app(study, Store(study.root / DATABASE), Settings(token, name_signin, secure_cookie=tls))
    scheme = "https" if tls else "http"
    shown = host if ":" not in host else f"[{host}]"
    log(f"reader study: serving {len(study.cases)} cases x {len(study.arms)} arms on "
        f"{scheme}://{shown}:{options.port}/ (readers sign in {'by name or token' if name_signin else 'by token only'})")
    log(f"reader study: admin page {scheme}://{shown}:{options.port}/admin#token={token}")
    if not local:
        log("reader study: listening beyond this machine: invite readers on the admin page and share each "
            "reader's code privately" + ("" if tls else "; without --certfile, traffic is not encrypted"))
    uvicorn.run(app, host=host, port=options.port, log_level="warning", access_log=False,
                ssl_certfile=str(options.certfile) if tls else None,
                ssl_keyfile=str(options.keyfile) if options.keyfile else None)
