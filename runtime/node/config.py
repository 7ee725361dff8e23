"""The node's settings as plain data: from the command line, a TOML or JSON file, or both.

Every command-line option has a key of the same name in the file (``--spool-limit-mb`` is
``spool_limit_mb``; ``--allow`` is a list). The command line wins over the file. Values are
checked here, once, so the rest of the node can trust them; a bad value is a ``ConfigError``
with one line that names the setting.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from runtime.model_location import is_model_url, model_location
from runtime.strength import DEFAULT_STRENGTH, check_strength

AE_TITLE_LIMIT = 16  # PS3.5 6.2: AE is at most 16 characters, no backslash or control characters


class ConfigError(ValueError):
    """A setting that cannot work; the message is one line naming it."""


def check_ae_title(text: str, what: str) -> str:
    """An AE title, stripped; ConfigError unless it is 1-16 printable characters without a backslash."""
    title = str(text).strip()
    if not title or len(title) > AE_TITLE_LIMIT or "\\" in title or not title.isprintable():
        raise ConfigError(f"{what}: {title!r} is not an AE title (1-16 printable characters, no backslash)")
    return title


def _port(text: Any, what: str) -> int:
    try:
        port = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: {text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} is outside 0-65535")
    return port


@dataclass(frozen=True)
class Destination:
    """Where derived (and original) instances go: ``AE@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str = "--forward") -> "Destination":
        ae, at, address = str(text).partition("@")
        host, colon, port = address.rpartition(":")
        if not at or not colon or not host:
            raise ConfigError(f"{what}: {text!r} is not AE@HOST:PORT")
        return cls(check_ae_title(ae, what), host.strip("[]"), _port(port, what))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Allowed:
    """A calling AE title that may associate, optionally only from some hosts (IP, network or name)."""

    ae_title: str
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    host: str = ""

    @classmethod
    def parse(cls, text: str) -> "Allowed":
        ae, _, host = str(text).partition("@")
        title = check_ae_title(ae, "--allow")
        if not host:
            return cls(title)
        return cls(title, _networks(host), host)

    def permits(self, ae_title: str, address: str) -> bool:
        if ae_title.strip() != self.ae_title:
            return False
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}" if self.host else self.ae_title


def _networks(host: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """An IP address, a network (``10.1.2.0/24``) or a host name (resolved now, at start)."""
    try:
        return (ipaddress.ip_network(host.strip("[]"), strict=False),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as error:
        raise ConfigError(f"--allow: host {host!r} cannot be resolved ({error.strerror or error})") from None
    return tuple(sorted({ipaddress.ip_network(info[4][0]) for info in infos}, key=str))


def host_port(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) as a pair."""
    host, colon, port = str(text).rpartition(":")
    if not colon or not host:
        raise ConfigError(f"{what}: {text!r} is not HOST:PORT")
    return host.strip("[]"), _port(port, what)


@dataclass
class NodeConfig:
    """Everything the node needs; defaults are those of the command line."""

    spool: Path
    forward: Destination
    port: int = 11112
    bind: str = "0.0.0.0"
    ae_title: str = "MEDCLEAR"
    allow: tuple[Allowed, ...] = ()
    forward_original: bool = False
    # A file, or a Triton model URL; None: the shipped denoiser, MR files to the MR one where
    # installed (runtime/routing.py), unless $MEDCLEAR_MODEL names one model for every file.
    model: Path | str | None = None
    # MODALITY -> a model for that modality's instances beside ``model`` (e.g. MR's engine on a Jetson).
    modality_models: tuple[tuple[str, Path | str], ...] = ()
    backend: str = "auto"
    threads: int | None = None
    strength: float = DEFAULT_STRENGTH
    http: tuple[str, int] | None = None
    spool_limit_mb: int = 10240
    min_free_mb: int = 1024
    max_attempts: int = 10
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    settle_s: float = 2.0
    max_associations: int = 10
    timeout_s: float = 30.0
    drain_timeout_s: float = 60.0
    worker_nice: int = 10
    # While an association is receiving, enhancement waits until this many received instances
    # are queued (0: enhance while receiving): on a small machine a burst is acknowledged at
    # full speed, and a sustained stream is enhanced alongside once its backlog reaches this.
    receive_first: int = 200
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    forward_tls: bool = False
    forward_tls_ca: Path | None = None
    forward_tls_cert: Path | None = None
    forward_tls_key: Path | None = None
    retry_failed: bool = False
    journal: bool = True
    journal_segment_mb: int = 64
    log_level: str = "info"

    @property
    def spool_limit_bytes(self) -> int:
        return self.spool_limit_mb * 1024 * 1024

    @property
    def min_free_bytes(self) -> int:
        return self.min_free_mb * 1024 * 1024

    @property
    def journal_segment_bytes(self) -> int:
        """The journal's segment size, 0 without a journal (received instances written into incoming/ directly)."""
        return self.journal_segment_mb * 1024 * 1024 if self.journal else 0


PATHS = {"spool", "model", "tls_cert", "tls_key", "tls_ca", "forward_tls_ca", "forward_tls_cert", "forward_tls_key"}
FLAGS = {"forward_original", "forward_tls", "retry_failed", "journal"}
INTEGERS = {"port": 0, "spool_limit_mb": 1, "min_free_mb": 0, "max_attempts": 1, "max_associations": 1,
            "threads": 1, "worker_nice": 0, "journal_segment_mb": 1, "receive_first": 0}
NUMBERS = {"retry_base_s": 0.0, "retry_max_s": 0.0, "settle_s": 0.0, "timeout_s": 0.1, "drain_timeout_s": 0.0}
LOG_LEVELS = ("debug", "info", "warning", "error")
KEYS = {f.name for f in fields(NodeConfig)}


def load_file(path: Path) -> dict[str, Any]:
    """A TOML (``.toml``) or JSON file's settings, as a plain dict."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"--config: cannot read {path}: {error.strerror or error}") from None
    try:
        if path.suffix.lower() == ".toml":
            settings = _toml().loads(data.decode("utf-8"))
        else:
            settings = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"--config: {path} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: "
                          f"{' '.join(str(error).split())}") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"--config: {path} must hold a table/object of settings")
    settings = {str(key).replace("-", "_"): value for key, value in settings.items()}
    folder = path.resolve().parent
    for key in PATHS & set(settings):  # relative to the file's folder
        settings[key] = _relative_to(settings[key], folder)
    modality_models = settings.get("modality_models")
    if isinstance(modality_models, dict):
        settings["modality_models"] = {modality: _relative_to(model, folder) for modality, model in modality_models.items()}
    elif isinstance(modality_models, list):  # ["MR=FILE", ...]
        settings["modality_models"] = [f"{item.partition('=')[0]}={_relative_to(item.partition('=')[2], folder)}"
                                       if isinstance(item, str) else item for item in modality_models]
    return settings


def _relative_to(value: Any, folder: Path) -> Any:
    """A relative path string taken from ``folder``; anything else (a model URL
    grpc://HOST:PORT/NAME, Triton, is not a path) as it is."""
    if isinstance(value, str) and not is_model_url(value) and not Path(value).expanduser().is_absolute():
        return str(folder / value)
    return value


def _toml():
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # Python 3.10 (JetPack 6): the same parser as a package
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ConfigError("--config: TOML needs Python 3.11 or the tomli package; "
                              "use a .json file instead") from None
    return tomllib


def build(settings: dict[str, Any]) -> NodeConfig:
    """A checked NodeConfig from plain settings (file, then command line merged by the caller)."""
    unknown = sorted(set(settings) - KEYS)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    values = {key: value for key, value in settings.items() if value is not None}
    for key in ("spool", "forward"):
        if key not in values:
            raise ConfigError(f"--{key} is required (on the command line or in the config file)")
    out: dict[str, Any] = {}
    for key, value in values.items():
        out[key] = _convert(key, value)
    config = NodeConfig(**out)
    _check(config)
    return config


def _model(value: Any) -> Path | str:
    """A model setting: a Triton model URL as it is, else a path."""
    try:
        return model_location(str(value))
    except ValueError as error:  # an unknown ~user
        raise ConfigError(f"--model: {error}") from None


def _modality_models(value: Any) -> tuple[tuple[str, Path | str], ...]:
    """``{MODALITY = MODEL}`` (config file) or ``["MODALITY=MODEL", ...]`` (command line)."""
    from runtime.routing import parse_modality_model

    if isinstance(value, dict):
        items = [f"{modality}={model}" for modality, model in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [str(item) for item in value]
    else:
        raise ConfigError(f"--modality-model: expected MODALITY=MODEL entries, got {value!r}")
    pairs = []
    for item in items:
        try:
            modality, model = parse_modality_model(item)
        except ValueError as error:
            raise ConfigError(f"--modality-model: {error}") from None
        pairs.append((modality, model))  # parse_modality_model gave its location (runtime.model_location)
    return tuple(pairs)


def _convert(key: str, value: Any) -> Any:
    option = "--" + key.replace("_", "-")
    if key == "model":
        return _model(value)
    if key == "modality_models":
        return _modality_models(value)
    if key in PATHS:
        return Path(str(value)).expanduser()
    if key in FLAGS:
        if not isinstance(value, bool):
            raise ConfigError(f"{option}: expected true or false, got {value!r}")
        return value
    if key in INTEGERS:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{option}: expected an integer, got {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{option}: expected an integer, got {value!r}") from None
        if number < INTEGERS[key]:
            raise ConfigError(f"{option}: must be >= {INTEGERS[key]}, got {number}")
        return _port(number, option) if key == "port" else number
    if key in NUMBERS:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{option}: expected a number, got {value!r}") from None
        if not number >= NUMBERS[key] or number == float("inf"):
            raise ConfigError(f"{option}: must be a finite number >= {NUMBERS[key]:g}, got {value!r}")
        return number
    if key == "forward":
        return Destination.parse(value)
    if key == "allow":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"--allow: expected a list of AE[@HOST], got {value!r}")
        return tuple(Allowed.parse(item) for item in items)
    if key == "ae_title":
        return check_ae_title(value, "--ae-title")
    if key == "http":
        return host_port(value, "--http")
    if key == "strength":
        try:
            return check_strength(float(value))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"--strength: {error}") from None
    if key == "log_level":
        if str(value).lower() not in LOG_LEVELS:
            raise ConfigError(f"--log-level: choose one of {', '.join(LOG_LEVELS)}")
        return str(value).lower()
    return str(value)  # bind, backend (checked when the model is opened)


def _check(config: NodeConfig) -> None:
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if config.tls_ca and not config.tls_cert:
        raise ConfigError("--tls-ca (client certificates) needs --tls-cert and --tls-key")
    if bool(config.forward_tls_cert) != bool(config.forward_tls_key):
        raise ConfigError("--forward-tls-cert and --forward-tls-key go together")
    if (config.forward_tls_ca or config.forward_tls_cert) and not config.forward_tls:
        raise ConfigError("--forward-tls-ca/--forward-tls-cert need --forward-tls")
    if config.retry_max_s < config.retry_base_s:
        raise ConfigError("--retry-max-s must be >= --retry-base-s")
