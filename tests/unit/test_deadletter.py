"""The dead-letter store: JSON lines under data_dir/dead_letter/<sink>/, bounded, never raising."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
from structlog.testing import capture_logs

from forwarder.deadletter import DeadLetterStore, read_records, record_event
from forwarder.events import Event
from forwarder.telemetry.metrics import Metrics
from tests.helpers import sample

SINK = "splunk"


def store_at(tmp_path: Path, metrics: Metrics, max_bytes: int = 1 << 30) -> DeadLetterStore:
    return DeadLetterStore(
        tmp_path / "dead_letter" / SINK, SINK, max_bytes=max_bytes, metrics=metrics
    )


def all_records(store: DeadLetterStore) -> list[dict[str, object]]:
    return [r for path in store.files() for r in read_records(path)]


def test_records_hold_event_sink_time_status_answer_and_reason(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Each event is one JSON line with the destination's answer; the counter follows."""
    store = store_at(tmp_path, metrics)
    answer = '{"text":"Invalid data format","code":6,"invalid-event-number":0}'
    batch = [
        Event(b'{"user":"alice","n":1}', "tcp", 1_733_300_000.5),
        Event(b'{"n":2}', "tcp", 2.0),
    ]
    store.write(batch, reason="hec_code_6", status=400, response=answer)
    [path] = store.files()
    assert path.parent == tmp_path / "dead_letter" / SINK
    assert path.suffix == ".jsonl"
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["event"] == {"user": "alice", "n": 1}
    assert (first["sink"], first["status"], first["reason"]) == (SINK, 400, "hec_code_6")
    assert first["response"] == answer
    assert first["time"].endswith("+00:00") and first["time"][:2] == "20"
    assert (first["source"], first["received"]) == ("tcp", 1_733_300_000.5)
    assert sample(metrics.registry, "forwarder_dead_letter_events_total", sink=SINK) == 2


def test_replayed_event_keeps_bytes_envelope_and_own_time(tmp_path: Path, metrics: Metrics) -> None:
    """Replay gets the event as it was: object, source, receive time, envelope, own time."""
    store = store_at(tmp_path, metrics)
    meta = {"index": "client", "fields": {"k": "v"}}
    original = Event(
        b'{"timestamp":"2024-12-04T08:13:20Z","a":[1,2]}', "hec", 5.0, meta, None, 1_733_300_000.0
    )
    store.write([original], reason="http_400", status=400, response="{}")
    [record] = all_records(store)
    back = record_event(record)
    assert orjson.loads(back.raw) == orjson.loads(original.raw)
    assert (back.source, back.received, back.meta) == ("hec", 5.0, meta)
    assert back.timestamp == 1_733_300_000.0


def test_full_store_counts_drops_and_logs_once(tmp_path: Path, metrics: Metrics) -> None:
    """Beyond max_bytes events are counted as dead_letter_full, with one log line only."""
    store = store_at(tmp_path, metrics, max_bytes=600)
    with capture_logs() as logs:
        store.write([Event(b'{"n":1}', "tcp", 1.0)], reason="r", status=400, response="x")
        for _ in range(3):
            store.write(
                [Event(b'{"pad":"' + b"p" * 400 + b'"}', "tcp", 1.0)] * 2,
                reason="r",
                status=400,
                response="x",
            )
    assert len(all_records(store)) == 1
    dropped = sample(
        metrics.registry,
        "forwarder_events_dropped_total",
        component=SINK,
        reason="dead_letter_full",
    )
    assert dropped == 6
    assert sample(metrics.registry, "forwarder_dead_letter_events_total", sink=SINK) == 1
    assert [entry["log_level"] for entry in logs] == ["error"]
    assert sum(p.stat().st_size for p in store.files()) <= 600


def test_bound_includes_files_left_by_an_earlier_run(tmp_path: Path, metrics: Metrics) -> None:
    """A new store on an existing directory counts what is already there against max_bytes."""
    first = store_at(tmp_path, metrics, max_bytes=500)
    first.write(
        [Event(b'{"pad":"' + b"p" * 200 + b'"}', "tcp", 1.0)], reason="r", status=400, response=""
    )
    second = store_at(tmp_path, Metrics(), max_bytes=500)
    assert second.used_bytes() == sum(p.stat().st_size for p in first.files())
    second.write(
        [Event(b'{"pad":"' + b"p" * 200 + b'"}', "tcp", 1.0)], reason="r", status=400, response=""
    )
    assert len(all_records(second)) == 1


def test_unwritable_directory_counts_instead_of_raising(tmp_path: Path, metrics: Metrics) -> None:
    """A store that cannot write counts the events as dropped (dead_letter_error) and goes on."""
    (tmp_path / "dead_letter").write_text("a file where the directory should be")
    store = store_at(tmp_path, metrics)
    store.write([Event(b'{"n":1}', "tcp", 1.0)], reason="r", status=400, response="")
    dropped = sample(
        metrics.registry,
        "forwarder_events_dropped_total",
        component=SINK,
        reason="dead_letter_error",
    )
    assert dropped == 1


def test_restore_puts_records_back_unchanged(tmp_path: Path, metrics: Metrics) -> None:
    """Records handed back after an interrupted replay read the same as before."""
    store = store_at(tmp_path, metrics)
    store.write(
        [Event(b'{"n":1}', "tcp", 1.0), Event(b'{"n":2}', "tcp", 2.0)],
        reason="r",
        status=413,
        response="big",
    )
    records = all_records(store)
    for path in store.files():
        path.unlink()
    store.restore(records)
    assert all_records(store) == records


def test_unreadable_lines_are_skipped(tmp_path: Path, metrics: Metrics) -> None:
    """A torn last line (a crash mid-write) does not hide the records before it."""
    store = store_at(tmp_path, metrics)
    store.write([Event(b'{"n":1}', "tcp", 1.0)], reason="r", status=400, response="")
    [path] = store.files()
    with path.open("ab") as fh:
        fh.write(b'{"sink":"splunk","event":{"n":')
    assert [r["event"] for r in read_records(path)] == [{"n": 1}]
