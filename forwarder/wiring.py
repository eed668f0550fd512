"""Building blocks of the topology: a sink's buffer, its directories under data_dir, and
compiled policies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from forwarder.buffers.base import Buffer
from forwarder.buffers.memory import MemoryBuffer
from forwarder.config import SinkConfig
from forwarder.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from forwarder.policy.config import PolicyRuleConfig
    from forwarder.policy.engine import Policy


def compile_policy(rules: Sequence[PolicyRuleConfig], hash_key: bytes | None) -> Policy | None:
    if not rules:
        return None
    # Imported on use: a config without rules never loads the policy engine.
    from forwarder.policy.engine import Policy

    return Policy.compile(rules, hash_key=hash_key)


def instance_dirs(
    root: Path, sink: str, instance: tuple[int, int] | None
) -> tuple[Path, list[Path]]:
    """(this process's directory for a sink, directories of former workers it adopts).

    A lone process uses ``<sink>`` and adopts every ``<sink>.w<j>``; worker i of N uses
    ``<sink>.w<i>`` and adopts ``<sink>.w<j>`` for j >= N with j % N == i, and worker 0 also
    adopts the lone process's ``<sink>``. So no directory is ever left without an owner when
    ``workers`` changes.
    """
    try:
        siblings = [p for p in root.iterdir() if p.name.startswith(f"{sink}.w")]
    except OSError:
        siblings = []
    numbered: dict[int, Path] = {}
    for path in siblings:
        suffix = path.name[len(sink) + 2 :]
        if suffix.isdigit():
            numbered[int(suffix)] = path
    if instance is None:
        return root / sink, [numbered[j] for j in sorted(numbered)]
    index, count = instance
    adopt = [numbered[j] for j in sorted(numbered) if j >= count and j % count == index]
    if index == 0 and (root / sink).is_dir():
        adopt.insert(0, root / sink)
    return root / f"{sink}.w{index}", adopt


def make_buffer(name: str, cfg: SinkConfig, directory: Path, metrics: Metrics) -> Buffer:
    b = cfg.buffer
    if b.type == "memory":
        return MemoryBuffer(name, max_events=b.max_events, max_bytes=b.max_bytes)
    from forwarder.buffers.disk import DiskBuffer

    corrupt = metrics.events_dropped.labels(name, "corrupt")
    buffer = DiskBuffer(
        name,
        directory,
        max_events=b.max_events,
        max_bytes=b.max_bytes,
        segment_bytes=b.segment_bytes,
        fsync=b.fsync,
        fsync_interval_secs=b.fsync_interval_secs,
        on_corrupt=corrupt.inc,
    )
    metrics.queues.watch_disk(name, lambda: (buffer.disk_bytes, buffer.disk_error is not None))
    return buffer
