"""``forwarder top``: a live terminal view of ``/api/status``.

Per source: events/s and open connections. Per sink: up or down, events/s, the queue against
its capacity as a bar, retries and dead letters. Rates are the difference between two polls.
``--once`` prints one snapshot (two polls ``--interval`` apart) and exits, for scripts.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

Status = dict[str, Any]


def fetch(url: str, timeout: float = 5.0) -> Status:
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/status", timeout=timeout) as resp:
        value = orjson.loads(resp.read())
    return value if isinstance(value, dict) else {}


def render(now: Status, before: Status | None, elapsed: float) -> Group:
    """Tables for one poll; rates need the poll before it."""

    def rate(section: str, name: str, key: str) -> str:
        if before is None or elapsed <= 0:
            return "-"
        old = before.get(section, {}).get(name, {}).get(key)
        new = now.get(section, {}).get(name, {}).get(key)
        if not isinstance(old, int | float) or not isinstance(new, int | float):
            return "-"
        return f"{max(0.0, (new - old) / elapsed):,.0f}"

    title = (
        f"forwarder {now.get('version', '?')}  state {now.get('state', '?')}"
        f"  workers {now.get('workers', 1)}"
    )
    sources = Table(title="sources", title_justify="left", expand=True)
    for column in ("source", "type", "events/s", "received", "connections"):
        sources.add_column(column, justify="left" if column in ("source", "type") else "right")
    for name, src in sorted(now.get("sources", {}).items()):
        sources.add_row(
            name,
            str(src.get("type", "")),
            rate("sources", name, "events_received"),
            f"{src.get('events_received', 0):,}",
            str(src.get("connections", "-")),
        )
    sinks = Table(title="sinks", title_justify="left", expand=True)
    for column in ("sink", "type", "state", "events/s", "queue", "retries", "dead letters"):
        sinks.add_column(
            column, justify="left" if column in ("sink", "type", "state", "queue") else "right"
        )
    for name, sink in sorted(now.get("sinks", {}).items()):
        up = sink.get("up", True)
        state = Text("up", style="green") if up else Text("DOWN", style="bold red")
        if sink.get("disk_error"):
            state = Text("DISK ERROR", style="bold red")
        sinks.add_row(
            name,
            str(sink.get("type", "")),
            state,
            rate("sinks", name, "events_sent"),
            queue_bar(sink.get("queue_events", 0), sink.get("capacity_events", 0)),
            f"{sink.get('retries', 0):,}",
            f"{sink.get('dead_letters', 0):,}",
        )
    errors = [
        Text(f"{name}: {sink['last_error']}", style="red")
        for name, sink in sorted(now.get("sinks", {}).items())
        if sink.get("last_error")
    ]
    return Group(Text(title, style="bold"), sources, sinks, *errors)


def queue_bar(depth: int, capacity: int, width: int = 12) -> Text:
    """``[#####-----]  1,234/100,000  1%``, yellow past 50%, red past 80%."""
    share = depth / capacity if capacity else 0.0
    filled = min(width, round(share * width))
    style = "red" if share > 0.8 else "yellow" if share > 0.5 else "green"
    bar = Text("[")
    bar.append("#" * filled, style=style)
    bar.append("-" * (width - filled))
    bar.append(f"] {depth:,}/{capacity:,} {share:.0%}")
    return bar


def run(url: str, *, once: bool, interval: float, console: Console | None = None) -> int:
    console = console or Console()
    try:
        before = fetch(url)
    except (urllib.error.URLError, OSError) as exc:
        console.print(f"forwarder top: cannot read {url}/api/status: {exc}")
        return 1
    taken = time.monotonic()
    if once:
        time.sleep(interval)
        now = fetch(url)
        console.print(render(now, before, time.monotonic() - taken))
        return 0
    with Live(render(before, None, 0), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                try:
                    now = fetch(url)
                except (urllib.error.URLError, OSError) as exc:
                    live.update(Text(f"cannot read {url}/api/status: {exc}", style="red"))
                    continue
                at = time.monotonic()
                live.update(render(now, before, at - taken))
                before, taken = now, at
        except KeyboardInterrupt:
            return 0
