"""forwarder itself as the system under test, started from ``.venv/bin/forwarder run``."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.peers.process import DaemonProcess, TargetError, free_port

__all__ = ["ForwarderOptions", "ForwarderTarget", "bench_config"]

BASE_CONFIG = Path(__file__).parent.parent / "configs" / "forwarder-hec.yaml"


@dataclass(frozen=True)
class ForwarderOptions:
    """What a run changes in the base bench config.

    Arguments:
        http: ingest over HTTP ``POST /v1/events`` instead of TCP NDJSON.
        gzip: ``compression: gzip`` on the HEC sink.
        buffer: ``memory`` or ``disk``.
        workers: top-level ``workers: N``, or None to leave the default.
    """

    http: bool = False
    gzip: bool = False
    buffer: str = "memory"
    workers: int | None = None


def bench_config(
    options: ForwarderOptions,
    *,
    ingest_port: int,
    admin_port: int,
    sink_port: int,
    data_dir: Path,
    base: Path = BASE_CONFIG,
) -> dict[str, Any]:
    """The base bench config with ports, data_dir and the run's options filled in."""
    config: dict[str, Any] = yaml.safe_load(base.read_text())
    config["data_dir"] = str(data_dir)
    config["admin"]["address"] = f"127.0.0.1:{admin_port}"
    source = config["sources"]["in"]
    source["address"] = f"127.0.0.1:{ingest_port}"
    source["type"] = "http" if options.http else "tcp"
    sink = config["sinks"]["hec"]
    sink["endpoint"] = f"http://127.0.0.1:{sink_port}"
    sink["compression"] = "gzip" if options.gzip else "none"
    sink["buffer"]["type"] = options.buffer
    if options.workers is not None:
        config["workers"] = options.workers
    return config


def _default_executable() -> Path:
    return Path(sys.executable).with_name("forwarder")


class ForwarderTarget:
    """``forwarder run -c CONFIG`` in the foreground, ready once ``/readyz`` answers 200.

    Arguments:
        options: the run's flags.
        executable: the ``forwarder`` console script; default: next to this Python.
    """

    name = "forwarder"

    def __init__(self, options: ForwarderOptions, *, executable: Path | None = None) -> None:
        self.options = options
        self.executable = executable or _default_executable()
        self._daemon: DaemonProcess | None = None

    def _config(
        self, workdir: Path, ingest_port: int, admin_port: int, sink_port: int
    ) -> dict[str, Any]:
        """The generated config; subclasses add to it."""
        return bench_config(
            self.options,
            ingest_port=ingest_port,
            admin_port=admin_port,
            sink_port=sink_port,
            data_dir=workdir / "forwarder-data",
        )

    @property
    def pid(self) -> int:
        if self._daemon is None:
            raise TargetError("forwarder is not running")
        return self._daemon.pid

    def _write_config(
        self, workdir: Path, *, ingest_port: int, admin_port: int, sink_port: int
    ) -> Path:
        config = self._config(workdir, ingest_port, admin_port, sink_port)
        path = workdir / "forwarder.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def check(self, workdir: Path) -> None:
        if not self.executable.exists():
            raise TargetError(f"forwarder mode unavailable: {self.executable} does not exist")
        path = self._write_config(
            workdir, ingest_port=free_port(), admin_port=free_port(), sink_port=free_port()
        )
        result = subprocess.run(
            [str(self.executable), "check-config", "-c", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-12:]
            raise TargetError(
                f"forwarder mode unavailable: `forwarder check-config -c {path}` exited "
                f"{result.returncode}; the forwarder (with its splunk_hec sink) must accept "
                "the bench config. Run with --no-forwarder to measure only the peer.\n"
                + "\n".join(detail)
            )

    async def start(self, *, sink_port: int, workdir: Path) -> int:
        ingest_port, admin_port = free_port(), free_port()
        path = self._write_config(
            workdir, ingest_port=ingest_port, admin_port=admin_port, sink_port=sink_port
        )
        argv = [str(self.executable), "run", "-c", str(path)]
        self._daemon = DaemonProcess(argv, log_path=workdir / "forwarder.log", name=self.name)
        url = f"http://127.0.0.1:{admin_port}/readyz"
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(url) as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await self._daemon.start(ready)
        return ingest_port

    async def stop(self) -> int | None:
        daemon, self._daemon = self._daemon, None
        return None if daemon is None else await daemon.stop()
