"""The command line: check-config, --version, exit codes, no tracebacks for user errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from forwarder import __version__
from forwarder.cli import main
from tests.helpers import REPO, run_cli

BAD = sorted((REPO / "tests" / "configs").glob("*.yaml"))


def good_config(tmp_path: Path) -> Path:
    path = tmp_path / "ok.yaml"
    path.write_text(
        f"""
data_dir: {tmp_path}/data
admin: {{address: "127.0.0.1:0"}}
sources:
  t: {{type: tcp, address: "127.0.0.1:0"}}
sinks:
  f: {{type: file, path: {tmp_path}/out.jsonl}}
"""
    )
    return path


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file: exit 0 and "config OK"."""
    assert main(["check-config", "-c", str(good_config(tmp_path))]) == 0
    assert capsys.readouterr().out == "config OK\n"


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_check_config_bad_exits_2_with_key_paths(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid file: exit 2, every error with its key path on stderr, nothing on stdout."""
    assert main(["check-config", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("config error:\n")
    for line in path.read_text().splitlines():
        for tag in ("# expect: ", "# expect-start: ", "# expect-in: "):
            if line.startswith(tag):
                assert line[len(tag) :] in err


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_run_with_bad_config_exits_2_before_starting(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run`` stops on every bad file with exit 2 and its key paths, before binding anything."""
    assert main(["run", "-c", str(path)]) == 2
    _, err = capsys.readouterr()
    for line in path.read_text().splitlines():
        for tag in ("# expect: ", "# expect-start: ", "# expect-in: "):
            if line.startswith(tag):
                assert line[len(tag) :] in err


def test_check_config_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    """A config path that does not exist: exit 2 naming it."""
    assert main(["check-config", "-c", "/nonexistent/f.yaml"]) == 2
    assert "/nonexistent/f.yaml: cannot read" in capsys.readouterr().err


def test_check_config_warns_on_unwritable_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A data_dir under a path that is not a directory is warned about (still exit 0)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = tmp_path / "c.yaml"
    path.write_text(f"data_dir: {blocker}/data\nsinks:\n  f: {{type: file, path: {tmp_path}/o}}\n")
    assert main(["check-config", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "config OK\n"
    assert "warning: data_dir" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the version and exits 0."""
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"forwarder {__version__}"


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No command, or an unknown one, is a usage error: exit 2."""
    for argv in ([], ["frobnicate"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


async def test_check_config_process_has_no_traceback() -> None:
    """As a process: exit 2, the key path on stderr, no Python traceback."""
    code, out, err = await run_cli(
        "check-config", "-c", str(REPO / "tests/configs/many_errors.yaml")
    )
    assert code == 2
    assert "sources.a.max_connections: must be greater than 0" in err
    assert "Traceback" not in err and out == ""


async def test_run_with_bad_config_exits_2() -> None:
    """``run`` with an invalid config stops before start-up with exit 2 and the key path."""
    path = REPO / "tests/configs/batch_max_events_zero.yaml"
    code, _, err = await run_cli("run", "-c", str(path))
    assert code == 2
    assert "sinks.out.batch.max_events: must be greater than 0" in err
    assert "Traceback" not in err


async def test_run_reads_forwarder_config_env(tmp_path: Path) -> None:
    """``run`` without -c takes FORWARDER_CONFIG."""
    path = REPO / "tests/configs/unknown_top_key.yaml"
    code, _, err = await run_cli("run", env={"FORWARDER_CONFIG": str(path)})
    assert code == 2
    assert "shutdown_timeout: unknown key" in err


async def test_run_on_a_busy_port_exits_1_without_traceback(tmp_path: Path) -> None:
    """A port already in use is a start-up failure: exit 1, a message, no traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "busy.yaml"
        path.write_text(
            f"""
data_dir: {tmp_path}/data
admin: {{address: "127.0.0.1:0"}}
sources:
  t: {{type: tcp, address: "127.0.0.1:{port}"}}
sinks:
  f: {{type: file, path: {tmp_path}/out.jsonl}}
"""
        )
        code, _, err = await run_cli("run", "-c", str(path))
    assert code == 1
    assert "cannot start" in err
    assert "Traceback" not in err
