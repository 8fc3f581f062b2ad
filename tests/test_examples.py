"""The examples that `make demo` runs: the HTTP showcase in a short run, and the order."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def showcase() -> str:
    """The output of one 3-second showcase run (no terminal: plain progress lines)."""
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "http_showcase.py"), "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stderr == ""
    return completed.stdout


def row(output: str, label: str) -> list[str]:
    """The two cells (plain, stalwart) of the table row that starts with `label`."""
    for line in output.splitlines():
        if line.startswith(label):
            return line[len(label) :].split()
    raise AssertionError(f"no row {label!r} in:\n{output}")


def count(cell: str) -> int:
    """A table cell's number, without its thousands separators."""
    return int(cell.replace(",", ""))


def test_showcase_prints_the_table_and_a_summary(showcase: str) -> None:
    """A short run exits 0 and prints both columns, every row and the summary."""
    assert re.search(r"^\s+plain httpx\s+stalwart$", showcase, re.MULTILINE)
    for label in (
        "calls made",
        "succeeded (2xx)",
        "latency p50 (ms)",
        "latency p99 (ms)",
        "requests received",
        "  during the ",
        "retries, after:",
        "breaker rejections (stats().rejected)",
    ):
        assert len(row(showcase, label)) >= 2, label
    assert "Outside the outage stalwart's client answered" in showcase
    assert "During the outage the upstream got" in showcase
    assert "done: clients closed, upstream stopped" in showcase


def test_showcase_figures_agree_with_each_other(showcase: str) -> None:
    """The upstream saw every plain call once; breaker stats cover the clients' rejections.

    The breaker rejects more attempts than the clients see as `CircuitOpenError`: when
    it opens between two attempts of one call, the call returns its last response.
    """
    plain_calls, _ = map(count, row(showcase, "calls made"))
    plain_received, stalwart_received = map(count, row(showcase, "requests received"))
    assert plain_received == plain_calls > 0
    assert stalwart_received > 0
    rejected_by_clients = count(row(showcase, "failed fast: CircuitOpenError")[-2])
    rejected_by_breaker = count(row(showcase, "breaker rejections (stats().rejected)")[1])
    assert rejected_by_clients <= rejected_by_breaker


def test_showcase_writes_no_control_characters_without_a_terminal(showcase: str) -> None:
    """CI logs get plain lines: no carriage returns or escape sequences."""
    assert "\r" not in showcase
    assert "\x1b" not in showcase


def test_showcase_rejects_a_bad_duration() -> None:
    """--seconds out of range is a usage error (exit status 2), not a run."""
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "http_showcase.py"), "--seconds", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 2
    assert "--seconds" in completed.stderr


def test_run_all_runs_every_example_and_the_showcase_last() -> None:
    """make demo's runner finds every example and keeps the long showcase for the end."""
    spec = importlib.util.spec_from_file_location("run_all", EXAMPLES / "run_all.py")
    assert spec is not None
    assert spec.loader is not None
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    names = [path.name for path in run_all.examples()]
    expected = {p.name for p in EXAMPLES.glob("*.py")} - {"run_all.py"}
    assert set(names) == expected
    assert names[-1] == "http_showcase.py"
