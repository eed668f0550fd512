"""Summing the metrics and status of several worker processes into one view.

Each worker serves its own ``/metrics`` on a private loopback port; the supervisor's admin
port answers with their sum, so a scrape sees one forwarder whatever ``workers`` is. Counters,
histograms and most gauges add up (queue depth and capacity of a sink are the sum over its
per-worker buffers); a few gauges say "all of them" instead.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# Gauges that combine by min (every worker must be up / ready) or max (a constant 1).
_COMBINE = {
    "forwarder_sink_up": min,
    "forwarder_ready": min,
    "forwarder_build_info": max,
    # 1 when any worker's disk buffer for the sink cannot write.
    "forwarder_disk_error": max,
}


def merge_metrics(texts: list[str]) -> bytes:
    """Prometheus text from several expositions of the same metrics, combined."""
    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            entry = families.setdefault(family.name, (family.type, family.documentation, {}))
            combine = _COMBINE.get(family.name)
            samples = entry[2]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                previous = samples.get(key)
                if previous is None:
                    samples[key] = sample.value
                elif combine is not None:
                    samples[key] = combine(previous, sample.value)
                else:
                    samples[key] = previous + sample.value
    out: list[str] = []
    for name, (kind, doc, samples) in families.items():
        header = f"{name}_total" if kind == "counter" else name
        out.append(f"# HELP {header} {_escape_help(doc)}")
        out.append(f"# TYPE {header} {kind}")
        for (sample_name, labels), value in samples.items():
            if labels:
                rendered = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
                out.append(f"{sample_name}{{{rendered}}} {_number(value)}")
            else:
                out.append(f"{sample_name} {_number(value)}")
    return ("\n".join(out) + "\n").encode()


def merge_status(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``/api/status`` document from the workers': numbers add up, flags must all hold."""
    merged: dict[str, Any] = {}
    for part in parts:
        _merge_into(merged, part)
    merged["workers"] = len(parts)
    return merged


def _merge_into(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if key not in into:
            into[key] = _copy(value)
            continue
        current = into[key]
        if isinstance(value, bool) and isinstance(current, bool):
            into[key] = current and value
        elif isinstance(value, int | float) and isinstance(current, int | float):
            if key == "pid":
                continue
            into[key] = current + value
        elif isinstance(value, dict) and isinstance(current, dict):
            _merge_into(current, value)
        elif current is None:
            into[key] = _copy(value)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")
