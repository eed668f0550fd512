"""Loading and validating the YAML config.

The file is read, ``${VAR}``/``${VAR:-default}`` are expanded in string values, then each
source and sink is validated by the config class its ``type`` names in the registries. Every
problem is collected with its dotted key path and reported at once as a :class:`ConfigError`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from forwarder.policy.config import PolicyRules, SinkPolicyRules, route_targets

ENV_VAR = "FORWARDER_CONFIG"
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """Every problem found in a config, each prefixed by its key path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class Model(BaseModel):
    """Base for every config class: frozen, unknown keys rejected, secrets read from files.

    A subclass lists its secret keys in ``secret_keys``; each also accepts ``<key>_file``, the
    path of a file holding the value (trailing newline stripped).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    secret_keys: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls.secret_keys:
            return data
        data = dict(data)
        for key in cls.secret_keys:
            path = data.pop(f"{key}_file", None)
            if path is None:
                continue
            if key in data:
                raise ValueError(f"set either {key} or {key}_file, not both")
            try:
                text = Path(str(path)).read_text()
            except OSError as exc:
                raise ValueError(f"{key}_file: cannot read {path}: {exc.strerror}") from None
            # A list-valued secret (auth_tokens) takes one value per non-blank line.
            annotation = str(cls.model_fields[key].annotation)
            if annotation.startswith("list"):
                data[key] = [line.strip() for line in text.splitlines() if line.strip()]
            else:
                data[key] = text.rstrip("\n")
        return data


def parse_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) into its parts; port 0 means any free port."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be host:port, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def format_address(host: str, port: int) -> str:
    """``host:port``, brackets around an IPv6 host: what :func:`parse_address` reads."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_address(value: str) -> str:
    parse_address(value)
    return value


class TlsServerConfig(Model):
    """Listener TLS. ``client_ca_file`` makes client certificates required (mTLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


class TlsClientConfig(Model):
    """Outgoing TLS: server certificates are verified unless ``verify: false``."""

    verify: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class SourceConfig(Model):
    """Keys every source has."""

    type: str
    address: str

    _address = field_validator("address")(_check_address)


class BatchConfig(Model):
    max_events: int = Field(1000, gt=0)
    max_bytes: int = Field(1_000_000, gt=0)
    timeout_secs: float = Field(1.0, gt=0)


class BufferConfig(Model):
    type: Literal["memory", "disk"] = "memory"
    max_events: int = Field(100_000, gt=0)
    max_bytes: int = Field(268_435_456, gt=0)
    when_full: Literal["block", "drop_newest"] = "block"
    # Disk only.
    segment_bytes: int = Field(64 * 1024 * 1024, gt=4096)
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_secs: float = Field(0.2, gt=0)


class RequestConfig(Model):
    concurrency: int = Field(4, gt=0, le=256)
    timeout_secs: float = Field(30.0, gt=0)
    retry_initial_backoff_secs: float = Field(0.5, gt=0)
    retry_max_backoff_secs: float = Field(30.0, gt=0)
    retry_after_max_secs: float = Field(300.0, ge=0)


class DeadLetterConfig(Model):
    max_bytes: int = Field(1024**3, gt=0)


class SinkConfig(Model):
    """Keys every sink has; batching, buffering and retries are shared machinery."""

    type: str
    inputs: list[str] | None = None
    batch: BatchConfig = BatchConfig()
    buffer: BufferConfig = BufferConfig()
    request: RequestConfig = RequestConfig()
    dead_letter: DeadLetterConfig = DeadLetterConfig()
    policy: SinkPolicyRules = ()


class LogConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] | None = None  # None: console on a tty, else json


class AdminConfig(Model):
    address: str = "127.0.0.1:9108"

    _address = field_validator("address")(_check_address)


class Settings(Model):
    """Top-level keys other than ``sources`` and ``sinks``."""

    data_dir: Path = Path("/var/lib/forwarder")
    shutdown_timeout_secs: float = Field(30.0, gt=0)
    log: LogConfig = LogConfig()
    admin: AdminConfig = AdminConfig()
    policy: PolicyRules = ()
    policy_hash_key: str | None = None
    # Worker processes sharing the ingest ports; None: one per CPU core.
    workers: int | None = Field(None, ge=1, le=64)
    secret_keys: ClassVar[tuple[str, ...]] = ("policy_hash_key",)


@dataclass(frozen=True)
class Config:
    """A validated config: settings plus typed component configs, keyed by name."""

    settings: Settings
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    sinks: dict[str, SinkConfig] = field(default_factory=dict)
    path: Path | None = None

    @property
    def worker_count(self) -> int:
        """Worker processes to run: ``workers``, else one per core; one when an ingest
        source hands out acknowledgement ids, which only the process that issued them knows."""
        if self.settings.workers is not None:
            return self.settings.workers
        if self.ack_sources:
            return 1
        return os.cpu_count() or 1

    @property
    def ack_sources(self) -> list[str]:
        return [n for n, s in self.sources.items() if getattr(s, "acknowledgements", False)]

    def sink_inputs(self, sink: str) -> list[str]:
        inputs = self.sinks[sink].inputs
        return list(self.sources) if inputs is None else inputs


# -- loading -----------------------------------------------------------------------------


def load_file(path: Path | str) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return load_text(text, path=path)


def load_default() -> Config:
    """The embedded default config (forwarder/default.yaml)."""
    from importlib import resources

    return load_text(resources.files("forwarder").joinpath("default.yaml").read_text())


def load_text(text: str, *, path: Path | None = None) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path or 'config'}: not valid YAML: {exc}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping"])
    return build(raw, path=path)


def build(raw: dict[str, Any], *, path: Path | None = None) -> Config:
    # Imported here: the registries import component modules that import this one.
    from forwarder.sinks import SINKS
    from forwarder.sources import SOURCES

    errors: list[str] = []
    raw = _interpolate(raw, "", errors)
    rest = {k: v for k, v in raw.items() if k not in ("sources", "sinks")}
    settings = _validate(Settings, rest, "", errors)
    sources: dict[str, SourceConfig] = {}
    sinks: dict[str, SinkConfig] = {}
    for section, registry, out in (
        ("sources", SOURCES, sources),
        ("sinks", SINKS, sinks),
    ):
        items = raw.get(section) or {}
        if not isinstance(items, dict):
            errors.append(f"{section}: must be a mapping of name to component")
            continue
        for name, body in items.items():
            where = f"{section}.{name}"
            if not isinstance(body, dict):
                errors.append(f"{where}: must be a mapping")
                continue
            kind = body.get("type")
            if not isinstance(kind, str) or kind not in registry:
                known = ", ".join(sorted(registry))
                errors.append(f"{where}.type: must be one of {known}, got {kind!r}")
                continue
            model = _validate(registry[str(kind)][0], body, where + ".", errors)
            if model is not None:
                out[name] = model
    if not raw.get("sinks"):
        errors.append("sinks: at least one sink is required")
    for name, sink in sinks.items():
        for i, inp in enumerate(sink.inputs or []):
            if inp not in sources:
                errors.append(f"sinks.{name}.inputs.{i}: unknown source {inp!r}")
    if settings is not None:
        for i, j, target in route_targets(settings.policy):
            if target not in sinks and target not in (raw.get("sinks") or {}):
                errors.append(f"policy.{i}.then.route.{j}: unknown sink {target!r}")
    _check_addresses(settings, sources, errors)
    if settings is not None and (settings.workers or 1) > 1:
        for name, src in sources.items():
            if getattr(src, "acknowledgements", False):
                errors.append(
                    f"sources.{name}.acknowledgements: needs workers: 1 (a client may poll "
                    "/ack on a connection that another worker serves)"
                )
    if errors or settings is None:
        raise ConfigError(errors)
    return Config(settings, sources, sinks, path)


def _check_addresses(
    settings: Settings | None, sources: dict[str, SourceConfig], errors: list[str]
) -> None:
    seen: dict[tuple[str, int, str], str] = {}
    if settings is not None:
        seen[(*parse_address(settings.admin.address), "tcp")] = "admin.address"
    for name, src in sources.items():
        host, port = parse_address(src.address)
        proto = str(getattr(src, "mode", "tcp"))
        key = (host, port, proto)
        if port and key in seen:
            errors.append(f"sources.{name}.address: {src.address} is already used by {seen[key]}")
        seen[key] = f"sources.{name}.address"


def _validate(model: type[Model], data: dict[str, Any], prefix: str, errors: list[str]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            message = _message(err)
            # Whole-model checks name their key at the start of the message: "key: why".
            key, sep, rest = message.partition(": ")
            if sep and key.replace("_", "").isalnum() and " " not in key:
                loc, message = f"{loc}.{key}" if loc else key, rest
            errors.append(f"{prefix}{loc}".rstrip(".") + f": {message}")
        return None


def _message(err: Any) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {
            "greater_than": "greater than",
            "greater_than_equal": "at least",
            "less_than": "less than",
            "less_than_equal": "at most",
        }[kind]
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # "greater than 0", not "greater than 0.0"
        return f"must be {words} {bound}"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg[:1].lower() + msg[1:]


def _interpolate(value: Any, where: str, errors: list[str]) -> Any:
    if isinstance(value, dict):
        return {
            k: _interpolate(v, f"{where}.{k}" if where else str(k), errors)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, f"{where}.{i}", errors) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        env = os.environ.get(name)
        if env is not None and (env or default is None):
            return env
        if default is not None:
            return default
        errors.append(f"{where}: environment variable {name} is not set")
        return ""

    return _INTERPOLATION.sub(sub, value)
