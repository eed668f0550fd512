"""What makes a process one of the supervisor's workers: its identity, its share of the
config, dying with the supervisor, and reporting that it serves.

The supervisor (:mod:`forwarder.supervisor`) starts each worker with the environment
variables below; a process without them is the only one and none of this applies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket

import orjson

from forwarder.config import Config, SinkConfig

__all__ = [
    "ADDRESSES_ENV",
    "HANDED_ENV",
    "HANDOFF_FD_ENV",
    "PARENT_ENV",
    "WORKER_ENV",
    "WORKER_FD_ENV",
    "follow_parent",
    "handed",
    "handoff_channel",
    "report_ready",
    "worker_identity",
    "worker_overrides",
]

WORKER_ENV = "FORWARDER_WORKER"  # "<index>/<count>"
WORKER_FD_ENV = "FORWARDER_WORKER_FD"  # where a worker reports it is ready
ADDRESSES_ENV = "FORWARDER_WORKER_ADDRESSES"  # JSON {source: "host:port"} resolved ports
PARENT_ENV = "FORWARDER_SUPERVISOR_PID"
HANDOFF_FD_ENV = "FORWARDER_WORKER_HANDOFF_FD"  # the channel connections arrive on
HANDED_ENV = "FORWARDER_WORKER_HANDED"  # JSON [source]: those the supervisor accepts for


def worker_identity() -> tuple[int, int] | None:
    """(index, count) when this process is a worker."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    index, _, count = value.partition("/")
    return int(index), int(count)


def handed(source: str) -> bool:
    """Whether the supervisor accepts this source's connections and hands them to this
    worker (:mod:`forwarder.handoff`), instead of the worker listening itself."""
    names: list[str] = orjson.loads(os.environ.get(HANDED_ENV, "[]"))
    return source in names


def handoff_channel() -> socket.socket | None:
    """This worker's end of the channel connections are handed over, if it has one."""
    fd = os.environ.get(HANDOFF_FD_ENV)
    return socket.socket(fileno=int(fd)) if fd else None


def follow_parent() -> None:
    """Have the kernel send SIGTERM to this worker if the supervisor dies (even by SIGKILL),
    so no orphan keeps the ports; the worker then drains and spills as on any stop."""
    import ctypes

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):
        # The supervisor died before prctl took effect.
        os.kill(os.getpid(), signal.SIGTERM)


def worker_overrides(config: Config) -> Config:
    """A worker's config: the supervisor's resolved ports, a private admin port, one worker,
    and its share of every sink's buffer and dead-letter limits, so that the limits a user
    writes bound the whole service (and its memory), not each process."""
    addresses: dict[str, str] = orjson.loads(os.environ.get(ADDRESSES_ENV, "{}"))
    identity = worker_identity()
    count = identity[1] if identity else 1
    sinks = {name: _share(sink, count) for name, sink in config.sinks.items()}
    sources = {
        name: src.model_copy(update={"address": addresses.get(name, src.address)})
        for name, src in config.sources.items()
    }
    settings = config.settings.model_copy(
        update={
            "admin": config.settings.admin.model_copy(update={"address": "127.0.0.1:0"}),
            "workers": 1,
        }
    )
    return Config(settings, sources, sinks, config.path)


def _share(sink: SinkConfig, count: int) -> SinkConfig:
    if count <= 1:
        return sink
    buffer = sink.buffer.model_copy(
        update={
            "max_events": max(1, sink.buffer.max_events // count),
            "max_bytes": max(1, sink.buffer.max_bytes // count),
        }
    )
    dead_letter = sink.dead_letter.model_copy(
        update={"max_bytes": max(1, sink.dead_letter.max_bytes // count)}
    )
    return sink.model_copy(update={"buffer": buffer, "dead_letter": dead_letter})


def report_ready(admin: tuple[str, int] | None) -> None:
    """Tell the supervisor this worker serves (one JSON line on the inherited pipe)."""
    fd = os.environ.get(WORKER_FD_ENV)
    if not fd or admin is None:
        return
    with contextlib.suppress(OSError):
        os.write(
            int(fd), orjson.dumps({"admin": f"{admin[0]}:{admin[1]}", "pid": os.getpid()}) + b"\n"
        )
        os.close(int(fd))
