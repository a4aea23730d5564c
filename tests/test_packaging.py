"""The install is quiet and complete: building the wheel (what `make install` does, editable)
prints no setuptools warning, and the wheel carries the Lua scripts and the dashboard's
templates and assets."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_builds_without_warnings_and_holds_the_data_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "BuildBackendWarning" not in output and "absent from the" not in output, output
    (wheel,) = tmp_path.glob("saga_orchestrator-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for pattern in ("sagas/lua/*.lua", "app/ui/templates/*.html", "app/ui/static/*"):
        wanted = {str(p.relative_to(ROOT)) for p in ROOT.glob(pattern)}
        assert wanted and wanted <= names, pattern
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
