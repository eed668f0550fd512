"""The deploy kit: manifests parse and agree; rules and dashboard read exported metrics."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientSession, web
from prometheus_client.parser import text_string_to_metric_families

from forwarder import config as forwarder_config
from forwarder.sinks import SINKS
from forwarder.sources import SOURCES
from tests.helpers import DaemonProcess, FakeCollector

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "forwarder-dashboard.json"
CONTAINERFILE = DEPLOY / "Containerfile"
K8S = DEPLOY / "k8s"
UNIT_FILE = ROOT / "systemd" / "forwarder.service"

_PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_LABEL_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
# Grafana's label_values(metric, label) reads a metric; label_values(label) reads none.
_LABEL_VALUES = re.compile(r"\blabel_values\s*\(\s*([^,()]*?)\s*,[^)]*\)")
_LABEL_VALUES_ALL = re.compile(r"\blabel_values\s*\([^,()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names_in(expr: str) -> set[str]:
    """Metric names a PromQL expression (or a Grafana label_values query) reads."""
    text = _STRINGS.sub(" ", expr)
    text = _GRAFANA_VARIABLES.sub(" ", text)
    text = _LABEL_MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    text = _LABEL_VALUES.sub(lambda m: f" {m.group(1)} ", text)
    text = _LABEL_VALUES_ALL.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call is None and name.lower() not in _PROMQL_KEYWORDS:
            names.add(name)
    return names


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"])
    return exprs


def _k8s_objects(variant: str) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k` would send, read from the files kustomize lists."""
    objects: list[dict[str, Any]] = []
    directory = K8S / variant
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        path = (directory / resource).resolve()
        if path.is_dir():
            objects.extend(_k8s_objects(str(path.relative_to(K8S))))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def _configmap_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (configmap,) = _by_kind(objects, "ConfigMap")
    parsed: dict[str, Any] = yaml.safe_load(configmap["data"]["forwarder.yaml"])
    return parsed


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not found")


def test_metric_names_in_reads_only_metric_names() -> None:
    """Functions, keywords, labels, grouping lists, durations and variables are not metrics."""
    expr = (
        'histogram_quantile(0.99, sum by (le, sink) (rate(x_bucket{sink=~"$sink", a="b(c)"}'
        "[$__rate_interval]))) / on (sink) group_left (job) y_total offset 5m > bool 1e3"
        " unless max_over_time(z[1h:1m]) or absent(w)"
    )
    assert metric_names_in(expr) == {"x_bucket", "y_total", "z", "w"}
    assert metric_names_in("sum(rate(a_total[5m])) without (instance) > Inf") == {"a_total"}
    assert metric_names_in("label_values(forwarder_build_info, instance)") == {
        "forwarder_build_info"
    }
    assert metric_names_in("label_values(instance)") == set()


def test_every_yaml_file_parses() -> None:
    """Every YAML document under deploy/ loads, and Kubernetes objects carry kind and name."""
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 12
    for path in files:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs, path
        if K8S in path.parents and path.name != "kustomization.yaml":
            for doc in docs:
                assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path


async def _live_metric_names(tmp_path: Path, workers: int) -> set[str]:
    """Sample names a running forwarder exposes on /metrics once every source kind took an
    event, a request failed and an input was invalid, so the labelled series exist."""
    async with FakeCollector() as collector:
        collector.script.respond(503)
        config = {
            "workers": workers,
            "shutdown_timeout_secs": 2,
            "sources": {
                "app_tcp": {"type": "tcp", "address": "127.0.0.1:0"},
                "app_http": {"type": "http", "address": "127.0.0.1:0"},
                "app_syslog": {"type": "syslog", "address": "127.0.0.1:0", "mode": "tcp"},
            },
            "sinks": {
                "webhook": {
                    "type": "http",
                    "endpoint": collector.endpoint,
                    "batch": {"timeout_secs": 0.05},
                    "buffer": {"type": "disk"},
                    "request": {"retry_initial_backoff_secs": 0.05},
                }
            },
        }
        assert set(SOURCES) == {"tcp", "http", "syslog"}, "give the new source kind an event"
        daemon = DaemonProcess(tmp_path, config)
        try:
            await daemon.start()
            _, writer = await asyncio.open_connection("127.0.0.1", daemon.port("app_tcp"))
            writer.write(b'{"via":"tcp"}\nnot json\n')
            _, syslog = await asyncio.open_connection("127.0.0.1", daemon.port("app_syslog"))
            syslog.write(b"<14>1 2024-05-01T10:00:00Z host app 1 - - via syslog\n")
            http = f"http://127.0.0.1:{daemon.port('app_http')}/v1/events"
            async with ClientSession() as session:
                async with session.post(http, json={"via": "http"}) as resp:
                    assert resp.status == 200
                await collector.wait_until(lambda: len(collector.received) >= 3)
                # The retried request's answer is counted once the sink has it.
                await asyncio.sleep(0.2)
                async with session.get(f"{daemon.admin_url}/metrics") as resp:
                    text = await resp.text()
            for stream in (writer, syslog):
                stream.close()
            assert await daemon.terminate() == 0
        finally:
            await daemon.close()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


@pytest.mark.parametrize("workers", [1, 2])
async def test_alerts_and_dashboard_use_only_live_metric_names(
    tmp_path: Path, workers: int
) -> None:
    """Every metric an alert or a dashboard query reads is on a live forwarder's /metrics
    (one process, and a supervisor summing two workers)."""
    exported = await _live_metric_names(tmp_path, workers)
    # The labelled series the traffic above must have made; without them the check is empty.
    assert {
        "forwarder_retries_total",
        "forwarder_ingest_errors_total",
        "forwarder_events_dropped_total",
        "forwarder_request_duration_seconds_bucket",
        "forwarder_buffer_disk_bytes",
    } <= exported
    used: dict[str, set[str]] = {}
    for rule in _alert_rules():
        used[rule["alert"]] = metric_names_in(rule["expr"])
    for expr in _dashboard_queries():
        used[expr] = metric_names_in(expr)
    assert all(used.values()), [where for where, names in used.items() if not names]
    unknown = {where: names - exported for where, names in used.items()}
    assert {where: names for where, names in unknown.items() if names} == {}


def test_alerts_cover_the_failure_modes_with_annotations() -> None:
    """Each failure mode has an alert with severity, summary, description and a runbook."""
    rules = {rule["alert"]: rule for rule in _alert_rules()}
    assert set(rules) == {
        "ForwarderSinkDown",
        "ForwarderQueueNearlyFull",
        "ForwarderEventsDropped",
        "ForwarderDeadLettersGrowing",
        "ForwarderRetryStorm",
        "ForwarderNotReady",
        "ForwarderDiskError",
        "ForwarderGone",
    }
    readme = (DEPLOY / "README.md").read_text()
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, name
        assert rule["annotations"]["runbook"].startswith(f"deploy/README.md#{name.lower()}:")
        assert f"\n### {name}\n" in readme, name


def test_dashboard_shows_each_concern() -> None:
    """The dashboard charts ingest, sends, queues, drops, retries, dead letters, latency, sinks."""
    used = set().union(*(metric_names_in(expr) for expr in _dashboard_queries()))
    assert {
        "forwarder_events_received_total",
        "forwarder_events_sent_total",
        "forwarder_queue_depth_events",
        "forwarder_queue_capacity_events",
        "forwarder_events_dropped_total",
        "forwarder_retries_total",
        "forwarder_dead_letter_events_total",
        "forwarder_request_duration_seconds_bucket",
        "forwarder_batch_size_events_bucket",
        "forwarder_sink_up",
    } <= used
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)


@needs_promtool
def test_promtool_checks_rules_config_and_rule_tests() -> None:
    """promtool accepts the rules and the scrape config, and the rule unit tests pass."""
    for argv in (
        ["promtool", "check", "rules", "alerts.yml"],
        ["promtool", "check", "config", "scrape.yml"],
        ["promtool", "test", "rules", "alerts_test.yml"],
    ):
        result = _run(argv, PROMETHEUS)
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
        assert "SUCCESS" in result.stdout + result.stderr


@needs_promtool
def test_promtool_checks_kubernetes_scrape_config() -> None:
    """The pod-discovery scrape config is valid where promtool has Kubernetes discovery."""
    result = _run(["promtool", "check", "config", "scrape-kubernetes.yml"], PROMETHEUS)
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        pytest.skip("this promtool is built without Kubernetes service discovery (Debian)")
    assert result.returncode == 0, (result.stdout, result.stderr)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not found")
@pytest.mark.parametrize("variant", ["deployment", "daemonset"])
def test_kustomize_renders_the_objects_listed(variant: str) -> None:
    """kubectl kustomize renders each variant into the objects its files declare."""
    result = _run(["kubectl", "kustomize", str(K8S / variant)], ROOT)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    names = sorted((obj["kind"], obj["metadata"]["name"]) for obj in rendered)
    expected = sorted((obj["kind"], obj["metadata"]["name"]) for obj in _k8s_objects(variant))
    assert names == expected
    assert {obj["metadata"].get("namespace", "forwarder") for obj in rendered} == {"forwarder"}


@pytest.mark.parametrize(
    ("variant", "kind"), [("deployment", "Deployment"), ("daemonset", "DaemonSet")]
)
def test_workload_agrees_with_its_config_and_service(variant: str, kind: str) -> None:
    """Probes, ports, volumes, Service selector and grace period match the ConfigMap's config."""
    objects = _k8s_objects(variant)
    config = _configmap_config(objects)
    (workload,) = _by_kind(objects, kind)
    pod = workload["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == _port(config["admin"]["address"])
    source_ports = {_port(source["address"]) for source in config["sources"].values()}
    assert source_ports == set(ports.values()) - {ports["admin"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["admin"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = int(pre_stop[1]) + config["shutdown_timeout_secs"]
    assert spec["terminationGracePeriodSeconds"] > drain
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == config["data_dir"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (configmap,) = _by_kind(objects, "ConfigMap")
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    if variant == "deployment":
        (claim,) = _by_kind(objects, "PersistentVolumeClaim")
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    (service,) = _by_kind(objects, "Service")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert workload["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports) - {"admin"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_configs_load_with_the_real_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's and the ConfigMap's forwarder.yaml pass the daemon's own validation."""
    for name in ("SPLUNK_HEC_TOKEN", "DD_API_KEY", "INGEST_TOKEN"):
        monkeypatch.setenv(name, "test-secret")
    image_config = forwarder_config.load_file(DEPLOY / "forwarder.yaml")
    assert image_config.settings.data_dir == Path("/var/lib/forwarder")
    raw = _configmap_config(_k8s_objects("deployment"))
    missing = {body["type"] for body in raw["sinks"].values()} - set(SINKS)
    missing |= {body["type"] for body in raw["sources"].values()} - set(SOURCES)
    if missing:
        pytest.skip(f"component types not registered yet: {sorted(missing)}")
    forwarder_config.build(raw)


def test_stop_timeouts_exceed_the_drain() -> None:
    """systemd's TimeoutStopSec leaves room for the configured drain and the spill."""
    unit = UNIT_FILE.read_text()
    match = re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.MULTILINE)
    assert match
    for config in (
        yaml.safe_load((DEPLOY / "forwarder.yaml").read_text()),
        _configmap_config(_k8s_objects("deployment")),
    ):
        assert int(match.group(1)) > config["shutdown_timeout_secs"]


def _containerfile_instructions() -> dict[str, list[str]]:
    """The final stage's instructions, keyed by keyword, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", CONTAINERFILE.read_text())
    final_stage = text.rsplit("\nFROM ", 1)[1]
    found: dict[str, list[str]] = {}
    for line in final_stage.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.setdefault(keyword.upper(), []).append(rest.strip())
    return found


def test_containerfile_matches_the_image_config() -> None:
    """The image runs as a non-root uid, exposes the config's ports, and keeps data_dir a volume."""
    instructions = _containerfile_instructions()
    config = yaml.safe_load((DEPLOY / "forwarder.yaml").read_text())
    assert CONTAINERFILE.read_text().startswith("# Build") and "python:3.11-slim" in (
        CONTAINERFILE.read_text()
    )
    (user,) = instructions["USER"]
    assert user == "${UID}:${UID}"
    assert "ARG" in instructions and instructions["ARG"] == ["UID=10001"]
    assert instructions["VOLUME"] == [config["data_dir"]]
    exposed = {int(p.split("/")[0]) for p in instructions["EXPOSE"][0].split()}
    addresses = [config["admin"]["address"]] + [s["address"] for s in config["sources"].values()]
    assert exposed == {_port(address) for address in addresses}
    assert instructions["STOPSIGNAL"] == ["SIGTERM"]


def _healthcheck_argv() -> list[str]:
    (healthcheck,) = _containerfile_instructions()["HEALTHCHECK"]
    argv: list[str] = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


async def _healthcheck_exit_code(url: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "FORWARDER_HEALTH_URL"}
    if url is not None:
        env["FORWARDER_HEALTH_URL"] = url
    # A proxy in the environment must not be used for the loopback check.
    env["HTTP_PROXY"] = env["http_proxy"] = "http://127.0.0.1:9"
    proc = await asyncio.create_subprocess_exec(
        *_healthcheck_argv(),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 30)


async def test_healthcheck_command_follows_healthz() -> None:
    """The image's HEALTHCHECK exits 0 on a 200 from /healthz and non-zero on 503 or no answer."""
    status = {"code": 200}

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(status=status["code"], text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/healthz"
        assert await _healthcheck_exit_code(url) == 0
        status["code"] = 503
        assert await _healthcheck_exit_code(url) != 0
    finally:
        await runner.cleanup()
    assert await _healthcheck_exit_code(url) != 0
