"""``forwarder`` command line. Exit codes: 0 clean stop, 2 usage or config error, 1 otherwise."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forwarder import __version__
from forwarder.config import ENV_VAR, Config, ConfigError, load_default, load_file

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forwarder", description="SIEM audit-event forwarder")
    parser.add_argument("--version", action="version", version=f"forwarder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument(
        "-c", "--config", help=f"config file (default: ${ENV_VAR}, else the embedded default)"
    )
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("-c", "--config", required=True)
    dlq = sub.add_parser("dlq", help="inspect and re-send dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    for name, text in (
        ("list", "counts per sink and reason"),
        ("show", "print dead letters as JSON lines"),
        ("replay", "send a sink's dead letters again"),
    ):
        p = dlq_sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", help=f"config file (default: ${ENV_VAR} or embedded)")
        if name != "list":
            p.add_argument("--sink", required=True)
        if name == "show":
            p.add_argument("--limit", type=int, default=20)
        if name == "replay":
            p.add_argument(
                "--give-up-after",
                type=float,
                default=60.0,
                metavar="SECS",
                help="stop when the destination settles no chunk for SECS, keeping the rest "
                "(default 60; 0: retry until interrupted)",
            )
    top = sub.add_parser("top", help="live per-component view of a running forwarder")
    top.add_argument("--url", default="http://127.0.0.1:9108", help="its admin address")
    top.add_argument("--once", action="store_true", help="print one snapshot and exit")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    policy = sub.add_parser("policy", help="check policy rules")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    test = policy_sub.add_parser(
        "test", help="read NDJSON events on stdin, print what each sink would receive"
    )
    test.add_argument("-c", "--config", help=f"config file (default: ${ENV_VAR} or embedded)")
    test.add_argument(
        "--source", help="source the events come from (default: the first in the config)"
    )
    return parser


def load_config(path: str | None) -> Config:
    path = path or os.environ.get(ENV_VAR) or None
    if path:
        return load_file(path)
    return load_default()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            return check_config(args.config)
        if args.command == "run":
            return run(args.config)
        if args.command == "dlq":
            return dlq_command(args)
        if args.command == "policy":
            return policy_test(args)
        if args.command == "top":
            from forwarder import top as top_view

            url = args.url if "://" in args.url else f"http://{args.url}"
            return top_view.run(url, once=args.once, interval=args.interval)
    except ConfigError as exc:
        print("config error:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


def check_config(path: str) -> int:
    config = load_file(path)
    warnings = data_dir_warnings(config)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("config OK")
    return EXIT_OK


def policy_test(args: argparse.Namespace) -> int:
    from forwarder.policy.cli import run_policy_test
    from forwarder.policy.config import PolicyRuleConfig

    config = load_config(args.config)
    source = args.source or next(iter(config.sources), "stdin")
    if config.sources and source not in config.sources:
        print(f"policy test: no source named {source!r} in the config", file=sys.stderr)
        return EXIT_USAGE
    sinks: dict[str, tuple[list[str] | None, Sequence[PolicyRuleConfig]]] = {
        name: (sink.inputs, sink.policy) for name, sink in config.sinks.items()
    }
    key = config.settings.policy_hash_key
    return run_policy_test(
        config.settings.policy,
        sinks,
        source,
        sys.stdin.buffer,
        sys.stdout,
        hash_key=key.encode() if key else None,
    )


def dlq_command(args: argparse.Namespace) -> int:
    from forwarder import dlq

    config = load_config(args.config)
    if args.dlq_command == "list":
        return dlq.list_counts(config, sys.stdout)
    if args.dlq_command == "show":
        return dlq.show(config, args.sink, args.limit, sys.stdout)
    if args.give_up_after < 0:
        print("dlq replay: --give-up-after must be 0 (never) or more seconds", file=sys.stderr)
        return 2
    return dlq.replay(config, args.sink, sys.stdout, give_up_secs=args.give_up_after)


def data_dir_warnings(config: Config) -> list[str]:
    """What would stop the daemon from writing its data_dir, found by trying (as root,
    permission bits say nothing; a read-only mount or a file in the way do)."""
    import tempfile

    data_dir = config.settings.data_dir
    probe = data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return [f"data_dir: {data_dir} cannot be created: {probe} is not a directory"]
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return [f"data_dir: {data_dir} is not writable: {exc.strerror}"]
    return []


def run(path: str | None) -> int:
    from forwarder import logs
    from forwarder.daemon import Daemon
    from forwarder.supervisor import Supervisor
    from forwarder.worker import follow_parent, worker_identity, worker_overrides

    config = load_config(path)
    logs.configure(config.settings.log.level, config.settings.log.format)
    identity = worker_identity()
    if identity is not None:
        import structlog

        follow_parent()
        config = worker_overrides(config)
        structlog.contextvars.bind_contextvars(worker=identity[0])
        count = 1
    else:
        count = config.worker_count

    async def main_async() -> int:
        if count > 1:
            return await Supervisor(config, count).run()
        return await Daemon(config, instance=identity).run()

    tune_gc()
    try:
        return _run_loop(main_async())
    except OSError as exc:
        # Typically a port already in use: a start-up error, not a crash.
        print(f"forwarder: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def tune_gc() -> None:
    """Events are many, small and mostly freed by reference counting; with the default
    thresholds the cyclic collector runs every few hundred allocations and its full passes
    walk every buffered event. Move what start-up built out of its sight and run it less."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


def _run_loop(coro: Any) -> int:
    """uvloop when installed (the ``speed`` extra), else the standard loop."""
    try:
        import uvloop
    except ImportError:
        return int(asyncio.run(coro))
    return int(uvloop.run(coro))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Path", "main"]
