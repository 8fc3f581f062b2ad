"""CI runs the suite on every Python the package's classifiers claim, and on no other."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def claimed() -> set[str]:
    """The X.Y versions pyproject.toml's classifiers name."""
    text = (ROOT / "pyproject.toml").read_text()
    return set(re.findall(r'"Programming Language :: Python :: (3\.\d+)"', text))


def others_in_ci() -> list[str]:
    """The Pythons `.ci/run` runs the suite on besides the default one."""
    text = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"^OTHER_PYTHONS=\(([^)]*)\)$", text, re.MULTILINE)
    assert match, ".ci/run no longer sets OTHER_PYTHONS=(...)"
    return match.group(1).split()


def default_python() -> str:
    """The X.Y of the Python `make test` uses by default (the Makefile's ``python3``)."""
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^PYTHON \?= (\S+)$", makefile, re.MULTILINE)
    assert match, "the Makefile no longer sets PYTHON ?= ..."
    out = subprocess.run(
        [match.group(1), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.strip()


def test_ci_runs_every_claimed_python() -> None:
    """The classifiers name exactly the default Python and the others CI runs."""
    others = others_in_ci()
    assert len(others) == len(set(others))
    assert claimed() == {default_python(), *others}
