"""docs/configuration.md is what the code reads: scripts/config-reference regenerates it from
the source and scripts/configuration.toml, and refuses a variable read but not described (or
described but read nowhere); the README's table names the same variables."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "config-reference"
INTERNAL = {"SAGA_PROMETHEUS_TMP_DIR"}  # set by `saga-orchestrator api` for gunicorn


@pytest.fixture()
def generator() -> Iterator[ModuleType]:
    loader = importlib.machinery.SourceFileLoader("config_reference", str(SCRIPT))
    spec = importlib.util.spec_from_loader("config_reference", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["config_reference"] = module  # its dataclasses look themselves up there
    try:
        loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("config_reference", None)


def documented() -> set[str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    return set(re.findall(r"^\| `([A-Z0-9_]+)`", text, flags=re.M))


def test_the_committed_reference_is_what_the_code_generates() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, (
        f"{done.stderr.strip()}\n(regenerate: .venv/bin/python scripts/config-reference "
        "> docs/configuration.md)"
    )


def test_defaults_come_from_the_code(generator: ModuleType) -> None:
    from app import config as app_config
    from sagas.settings import Settings

    found = generator.discover()
    assert found["SAGA_RETRY_ATTEMPTS"].readers["every component"] == {
        str(Settings().retry_attempts)
    }
    assert found["SAGA_MAX_PAYLOAD_BYTES"].readers["every component"] == {"262144"}
    assert found["SAGA_MAX_BODY_BYTES"].readers["API"] == {
        str(app_config.from_env({})["MAX_CONTENT_LENGTH"])
    }
    assert found["SAGA_BIND"].readers["API (gunicorn)"] == {"0.0.0.0:8008"}
    assert found["SAGA_URL"].readers["CLI"] == {"http://127.0.0.1:8008"}  # click's envvar
    assert "PATH" not in found


def test_a_variable_the_code_reads_without_a_description_is_an_error(
    generator: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    described = (ROOT / "scripts" / "configuration.toml").read_text()
    trimmed = tmp_path / "configuration.toml"
    trimmed.write_text(
        re.sub(r"\[SAGA_MAX_STEPS\]\nmeaning = .*\n", "", described)
        + '[SAGA_GONE]\nmeaning = "no longer read"\n'
    )
    monkeypatch.setattr(generator, "DESCRIPTIONS", trimmed)
    _, problems = generator.render()
    assert any(p.startswith("SAGA_MAX_STEPS: read in the code but not described") for p in problems)
    assert any(p.startswith("SAGA_GONE: described") for p in problems)

    source = tmp_path / "extra.py"
    source.write_text(
        'import os\nLIMIT = 7 * 3\na = os.environ.get("SAGA_NEW_THING") or "x"\n'
        'def f(env):\n    return _int(env, "SAGA_OTHER", LIMIT)\n'
    )
    found: dict[str, object] = {}
    generator.scan(source, "somewhere", found)
    assert found["SAGA_NEW_THING"].readers["somewhere"] == {"x"}  # type: ignore[attr-defined]
    assert found["SAGA_OTHER"].readers["somewhere"] == {"21"}  # type: ignore[attr-defined]


def test_the_readme_table_names_the_same_variables() -> None:
    section = (ROOT / "README.md").read_text().split("## Configuration (environment)")[1]
    section = section.split("\n## ")[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    assert names - documented() == set(), "in the README but read nowhere"
    assert documented() - INTERNAL - names == set(), "read by the code, missing in the README"


def test_any_helper_reading_env_is_found(generator: ModuleType, tmp_path: Path) -> None:
    """A new reader (`_switch(env, "X", True)`) needs no change to the generator."""
    source = tmp_path / "switch.py"
    source.write_text('def f(env):\n    return _switch(env, "SAGA_SOMETHING", True)\n')
    found: dict[str, object] = {}
    generator.scan(source, "here", found)
    assert found["SAGA_SOMETHING"].readers["here"] == {"1"}  # type: ignore[attr-defined]
