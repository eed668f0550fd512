"""sd_notify(3) without libsystemd: readiness, status, stopping, reloading and the watchdog.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the Linux abstract namespace). Outside systemd the
variable is unset and every call is a no-op, so the daemon calls the notifier unconditionally.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

import structlog
from structlog.typing import FilteringBoundLogger

__all__ = ["SystemdNotifier"]


def _socket_address(value: str) -> str | None:
    """Translate ``$NOTIFY_SOCKET`` into a ``sendto`` address; None for unsupported kinds."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # systemd >= 254 also passes "vsock:CID:PORT" to VMs; this daemon does not run there.
    return None


def _watchdog_interval_secs(environ: Mapping[str, str]) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when the watchdog is meant for this process."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID")
    # The variable is inherited by children; only the process systemd watches may ping.
    if pid is not None and pid != str(os.getpid()):
        return None
    # Half the deadline, as sd_watchdog_enabled(3) recommends, so one late tick is not fatal.
    return usec / 2 / 1_000_000


class SystemdNotifier:
    """Sends service state to systemd and keeps its watchdog fed from the event loop.

    Arguments:
        environ: where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` (microseconds) and ``WATCHDOG_PID``
            are read, once, at construction; defaults to ``os.environ``.
        logger: structlog logger; a send failure is logged once, never raised.

    ``start()`` runs a task that sends ``WATCHDOG=1`` every ``WATCHDOG_USEC / 2``. It runs on
    the event loop on purpose: if the loop wedges, the pings stop and systemd restarts the
    service. Stop it last, after the drain, so a long shutdown is not mistaken for a hang.
    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        raw_address = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw_address) if raw_address else None
        self._watchdog_secs = _watchdog_interval_secs(env) if self._address else None
        self._log = logger or structlog.get_logger().bind(component="systemd")
        self._failure_logged = False
        self._task: asyncio.Task[None] | None = None
        if raw_address and self._address is None:
            self._log.warning("notify_socket_unsupported", notify_socket=raw_address)

    @property
    def enabled(self) -> bool:
        """Whether a notification socket is configured (the process runs under systemd)."""
        return self._address is not None

    @property
    def watchdog_interval_secs(self) -> float | None:
        """Seconds between watchdog pings, or None when systemd does not watch this process."""
        return self._watchdog_secs

    def ready(self, status: str | None = None) -> bool:
        """Report start-up (or a reload) complete; also sends ``STATUS=`` when given."""
        fields = {"READY": "1"}
        if status is not None:
            fields["STATUS"] = status
        return self.notify(fields)

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.notify({"STATUS": text})

    def stopping(self) -> bool:
        """Report that shutdown (the drain) has begun."""
        return self.notify({"STOPPING": "1"})

    def reloading(self) -> bool:
        """Report a reload in progress; call ``ready()`` once the new config is applied."""
        # systemd >= 253 (Type=notify-reload) matches the reload by this timestamp.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000
        return self.notify({"RELOADING": "1", "MONOTONIC_USEC": str(usec)})

    def watchdog(self) -> bool:
        """Send one watchdog keep-alive."""
        return self.notify({"WATCHDOG": "1"})

    def notify(self, fields: Mapping[str, str]) -> bool:
        """Send ``fields`` as one datagram; True when it went out, False otherwise."""
        if self._address is None:
            return False
        # A newline inside a value would start a new, unintended assignment.
        lines = (f"{key}={value.replace(chr(10), ' ')}" for key, value in fields.items())
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Non-blocking: a full receive queue must not stall the event loop.
                sock.setblocking(False)
                sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._failure_logged:
                self._failure_logged = True
                self._log.warning(
                    "systemd_notify_failed", error=str(exc), notify_socket=self._address
                )
            return False
        return True

    async def start(self) -> None:
        """Start the watchdog task if systemd watches this process; idempotent."""
        if self._task is not None or self._watchdog_secs is None:
            return
        self._task = asyncio.create_task(self._watchdog_loop(self._watchdog_secs))
        self._log.info("watchdog_started", interval_secs=self._watchdog_secs)

    async def stop(self) -> None:
        """Stop the watchdog task; idempotent and safe without ``start()``."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # wait() rather than await: the task's CancelledError is expected, ours is not.
        await asyncio.wait([task])

    async def _watchdog_loop(self, interval_secs: float) -> None:
        while True:
            self.watchdog()
            await asyncio.sleep(interval_secs)
