"""Log output as processes sharing one stdout write it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_WRITER = """
import sys
import structlog
from forwarder.logs import configure
configure("info", "json")
log = structlog.get_logger().bind(component=sys.argv[1])
for i in range(5000):
    log.info("reloaded", i=i, pad="x" * 100)
"""


def test_processes_sharing_stdout_never_mix_lines() -> None:
    """The supervisor and its workers write JSON lines to one pipe, unbuffered as under
    systemd: every line read back is one whole record of one process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    read_fd, write_fd = os.pipe()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, name], stdout=write_fd, env=env, close_fds=True
        )
        for name in ("supervisor", "w0", "w1")
    ]
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        lines = pipe.read().splitlines()
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
    records = [json.loads(line) for line in lines]
    assert len(records) == 15_000
    for name in ("supervisor", "w0", "w1"):
        assert [r["i"] for r in records if r["component"] == name] == list(range(5000))
