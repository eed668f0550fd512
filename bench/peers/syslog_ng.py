"""syslog-ng 3.38 as the peer: NDJSON over TCP in, HEC batches out, flow control on.

The config is ``syslog-ng-hec.conf.in``, the shared peer config with its two ports
templated. Debian packages: ``syslog-ng-core`` and ``syslog-ng-mod-http``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.peers.process import DaemonProcess, TargetError, free_port, port_accepts

__all__ = ["SyslogNgTarget"]

TEMPLATE = Path(__file__).with_name("syslog-ng-hec.conf.in")


class SyslogNgTarget:
    """syslog-ng in the foreground with its persist, pid and control files in ``workdir``.

    Arguments:
        executable: the syslog-ng binary; default: found on PATH or in /usr/sbin.
        template: config template with ``@SOURCE_PORT@`` and ``@HEC_PORT@`` markers.
    """

    name = "syslog-ng"

    def __init__(self, *, executable: str | None = None, template: Path = TEMPLATE) -> None:
        self.executable = executable or shutil.which("syslog-ng") or "/usr/sbin/syslog-ng"
        self.template = template
        self._daemon: DaemonProcess | None = None

    @property
    def pid(self) -> int:
        if self._daemon is None:
            raise TargetError("syslog-ng is not running")
        return self._daemon.pid

    def render(self, *, source_port: int, hec_port: int) -> str:
        text = self.template.read_text()
        return text.replace("@SOURCE_PORT@", str(source_port)).replace("@HEC_PORT@", str(hec_port))

    def check(self, workdir: Path) -> None:
        if not Path(self.executable).exists():
            raise TargetError(
                "syslog-ng is not installed: apt-get install -y syslog-ng-core syslog-ng-mod-http"
            )
        config = workdir / "syslog-ng-check.conf"
        config.write_text(self.render(source_port=free_port(), hec_port=free_port()))
        result = subprocess.run(
            [self.executable, "--syntax-only", "-f", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise TargetError(
                f"syslog-ng rejects {config} (is syslog-ng-mod-http installed?):\n"
                f"{result.stderr.strip()}"
            )

    async def start(self, *, sink_port: int, workdir: Path) -> int:
        source_port = free_port()
        run_dir = workdir / "syslog-ng-run"
        run_dir.mkdir(parents=True, exist_ok=True)
        config = workdir / "syslog-ng.conf"
        config.write_text(self.render(source_port=source_port, hec_port=sink_port))
        # Absolute paths: syslog-ng resolves relative ones against /var/lib/syslog-ng.
        argv = [
            self.executable,
            "-F",
            "-e",
            "-f",
            str(config.resolve()),
            "-R",
            str((run_dir / "syslog-ng.persist").resolve()),
            "-p",
            str((run_dir / "syslog-ng.pid").resolve()),
            "-c",
            str((run_dir / "syslog-ng.ctl").resolve()),
        ]
        self._daemon = DaemonProcess(argv, log_path=workdir / "syslog-ng.log", name=self.name)
        await self._daemon.start(lambda: port_accepts(source_port))
        return source_port

    async def stop(self) -> int | None:
        daemon, self._daemon = self._daemon, None
        return None if daemon is None else await daemon.stop()
