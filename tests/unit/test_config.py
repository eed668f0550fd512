"""Config loading: example files, interpolation, secret files, and every rejection rule."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from forwarder.config import ConfigError, load_file, load_text
from tests.helpers import REPO

CONFIGS = REPO / "tests" / "configs"
EXAMPLES = sorted((REPO / "config").glob("*.yaml"))
BAD = sorted(CONFIGS.glob("*.yaml"))
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

DEFAULT_SETTINGS: dict[str, Any] = {
    "admin": {"address": "127.0.0.1:9108"},
    "data_dir": Path("data"),
    "log": {"format": None, "level": "info"},
    "policy": (),
    "policy_hash_key": None,
    "shutdown_timeout_secs": 30.0,
    "workers": None,
}
DEFAULT_SOURCES: dict[str, dict[str, Any]] = {
    "http": {
        "acknowledgements": False,
        "address": "127.0.0.1:8088",
        "auth_tokens": [],
        "idle_timeout_secs": 75.0,
        "max_body_bytes": 10485760,
        "max_connections": 10000,
        "max_event_bytes": 1048576,
        "queue_wait_secs": 5.0,
        "retry_after_secs": 5,
        "tls": None,
        "type": "http",
    },
    "tcp": {
        "address": "127.0.0.1:5170",
        "idle_timeout_secs": 300.0,
        "max_connections": 10000,
        "max_event_bytes": 1048576,
        "on_invalid": "wrap",
        "tls": None,
        "type": "tcp",
    },
}
DEFAULT_SINKS: dict[str, dict[str, Any]] = {
    "file": {
        "batch": {"max_bytes": 1000000, "max_events": 1000, "timeout_secs": 1.0},
        "buffer": {
            "fsync": "interval",
            "fsync_interval_secs": 0.2,
            "max_bytes": 268435456,
            "max_events": 100000,
            "segment_bytes": 67108864,
            "type": "memory",
            "when_full": "block",
        },
        "dead_letter": {"max_bytes": 1073741824},
        "fsync": False,
        "inputs": None,
        "path": Path("data/out/events.jsonl"),
        "policy": (),
        "request": {
            "concurrency": 4,
            "retry_after_max_secs": 300.0,
            "retry_initial_backoff_secs": 0.5,
            "retry_max_backoff_secs": 30.0,
            "timeout_secs": 30.0,
        },
        "type": "file",
    }
}


def expectations(path: Path) -> list[tuple[str, str]]:
    """``# expect: line`` (exact), ``# expect-start: prefix`` and ``# expect-in: text``."""
    out = []
    for line in path.read_text().splitlines():
        for kind in ("expect", "expect-start", "expect-in"):
            tag = f"# {kind}: "
            if line.startswith(tag):
                out.append((kind, line[len(tag) :]))
    return out


def assert_reported(errors: list[str], path: Path) -> None:
    wanted = expectations(path)
    assert wanted, f"{path.name} states no expectation"
    for kind, text in wanted:
        if kind == "expect":
            assert text in errors, f"{text!r} not in {errors}"
        elif kind == "expect-start":
            assert any(e.startswith(text) for e in errors), f"{text!r} starts none of {errors}"
        else:
            assert any(text in e for e in errors), f"{text!r} in none of {errors}"


def dumped(config: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    return (
        config.settings.model_dump(),
        {k: v.model_dump() for k, v in config.sources.items()},
        {k: v.model_dump() for k, v in config.sinks.items()},
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_config_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file in config/ is valid once the variables it needs without default are set."""
    for name in set(_VAR.findall(path.read_text())):
        monkeypatch.setenv(name, f"value-of-{name.lower()}")
    config = load_file(path)
    assert config.sinks


def test_default_config_loads_to_the_written_expectation() -> None:
    """config/default.yaml gives exactly these settings, sources and sinks."""
    assert dumped(load_file(REPO / "config" / "default.yaml")) == (
        DEFAULT_SETTINGS,
        DEFAULT_SOURCES,
        DEFAULT_SINKS,
    )


def test_embedded_default_matches_the_example() -> None:
    """The default used by ``forwarder run`` without a config is config/default.yaml."""
    text = resources.files("forwarder").joinpath("default.yaml").read_text()
    assert dumped(load_text(text)) == dumped(load_file(REPO / "config" / "default.yaml"))


def test_http_collector_example_interpolates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The http-collector example reads its token and URL from the environment."""
    monkeypatch.setenv("INGEST_TOKEN", "tok")
    monkeypatch.setenv("COLLECTOR_URL", "http://127.0.0.1:9/in")
    monkeypatch.delenv("WEBHOOK_TOKEN", raising=False)
    config = load_file(REPO / "config" / "http-collector.yaml")
    sink: Any = config.sinks["webhook"]
    assert sink.endpoint == "http://127.0.0.1:9/in"
    assert sink.headers == {"Authorization": "Bearer change-me"}
    source: Any = config.sources["app_http"]
    assert [t.get_secret_value() for t in source.auth_tokens] == ["tok"]


_INTERP = """
sinks:
  out:
    type: http
    endpoint: "http://${HOST_VAR:-127.0.0.1}:${PORT_VAR}/x"
"""


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({"PORT_VAR": "81"}, "http://127.0.0.1:81/x"),
        ({"PORT_VAR": "81", "HOST_VAR": "localhost"}, "http://localhost:81/x"),
        ({"PORT_VAR": "81", "HOST_VAR": ""}, "http://127.0.0.1:81/x"),
    ],
)
def test_variables_and_defaults(
    env: dict[str, str], endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """${VAR} takes the variable; ${VAR:-default} the default when unset or empty."""
    monkeypatch.delenv("HOST_VAR", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    sink: Any = load_text(_INTERP).sinks["out"]
    assert sink.endpoint == endpoint


def test_unset_variable_names_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing ${VAR} is an error that names the key and the variable."""
    monkeypatch.delenv("PORT_VAR", raising=False)
    with pytest.raises(ConfigError) as err:
        load_text(_INTERP)
    assert err.value.errors == ["sinks.out.endpoint: environment variable PORT_VAR is not set"]


def test_secret_files_are_read(tmp_path: Path) -> None:
    """``<secret>_file`` reads the value from a file: one token per line for a list."""
    tokens = tmp_path / "tokens"
    tokens.write_text("alpha\n\nbeta\n")
    key = tmp_path / "key"
    key.write_text("hash-key\n")
    config = load_text(
        f"""
policy_hash_key_file: {key}
sources:
  in: {{type: http, address: "127.0.0.1:0", auth_tokens_file: {tokens}}}
sinks:
  out: {{type: file, path: {tmp_path / "out"}}}
"""
    )
    assert config.settings.policy_hash_key == "hash-key"
    source: Any = config.sources["in"]
    assert [t.get_secret_value() for t in source.auth_tokens] == ["alpha", "beta"]
    assert "alpha" not in repr(source)


def test_sink_inputs_default_to_every_source() -> None:
    """A sink without ``inputs`` reads every source."""
    config = load_text(
        """
sources:
  a: {type: tcp, address: "127.0.0.1:0"}
  b: {type: http, address: "127.0.0.1:0"}
sinks:
  all: {type: file, path: /tmp/forwarder-never-written/all}
  one: {type: file, path: /tmp/forwarder-never-written/one, inputs: [b]}
"""
    )
    assert config.sink_inputs("all") == ["a", "b"]
    assert config.sink_inputs("one") == ["b"]


def test_port_zero_is_never_a_duplicate() -> None:
    """Several listeners on port 0 do not collide: the kernel picks each port."""
    config = load_text(
        """
admin: {address: "127.0.0.1:0"}
sources:
  a: {type: tcp, address: "127.0.0.1:0"}
  b: {type: tcp, address: "127.0.0.1:0"}
sinks:
  out: {type: file, path: /tmp/forwarder-never-written/out}
"""
    )
    assert set(config.sources) == {"a", "b"}


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_is_rejected_naming_its_key(path: Path) -> None:
    """Each file under tests/configs breaks one rule; the error names the key path."""
    with pytest.raises(ConfigError) as err:
        load_file(path)
    assert_reported(err.value.errors, path)


def test_unreadable_config_file() -> None:
    """A config path that does not exist is a ConfigError naming the path."""
    with pytest.raises(ConfigError) as err:
        load_file("/nonexistent/forwarder.yaml")
    assert err.value.errors == [
        "/nonexistent/forwarder.yaml: cannot read: No such file or directory"
    ]
