"""The result types reach a user's type checker: ``mypy --strict`` accepts a small program
that uses them right (``typed_usage/good.py``) and reports each misuse in its twin
(``typed_usage/bad.py``), on the marked lines. The package itself passes ``mypy --strict``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

PROGRAMS = Path(__file__).resolve().parent / "typed_usage"


def _mypy(program: Path, cache: Path) -> Tuple[int, List[str]]:
    # No configuration file: the user's view, not this repository's settings.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "", "--cache-dir",
         str(cache), "--no-error-summary", "--hide-error-context", str(program)],
        capture_output=True, text=True, cwd=PROGRAMS,
    )
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    return result.returncode, errors


def test_the_correct_program_passes_mypy_strict(tmp_path):
    status, errors = _mypy(PROGRAMS / "good.py", tmp_path)
    assert (status, errors) == (0, [])


def test_each_misuse_of_a_result_type_fails_mypy_strict(tmp_path):
    program = PROGRAMS / "bad.py"
    lines = program.read_text(encoding="utf-8").splitlines()
    expected = [
        (number + 1, marker.group(1))  # the line after the marker
        for number, line in enumerate(lines, start=1)
        for marker in [re.match(r"\s*# mypy: (.*)$", line)]
        if marker
    ]
    assert len(expected) == 4
    status, errors = _mypy(program, tmp_path)
    assert status == 1
    reported = [(int(error.split(":")[1]), error.split(": error: ", 1)[1]) for error in errors]
    assert len(reported) == len(expected), errors
    for (line, text), (seen_line, seen_text) in zip(expected, reported):
        assert seen_line == line and seen_text.startswith(text), errors


def test_the_package_itself_passes_mypy_strict(tmp_path):
    """A user's mypy reports nothing inside an installed package, so the programs above do not
    check the SDK's own code: e.g. that the async client's reference-SDK names
    (``_async_aliases.py``) call the methods they stand for as those are declared."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "", "--cache-dir",
         str(tmp_path), "--no-error-summary", "--hide-error-context", "-p", "eventdbx"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr
