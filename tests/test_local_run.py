"""The local run (`make run`, scripts/run-local) and its documentation, as a new user meets
them: the environment written to var/run.env and sourced in another terminal, a banner that
names only what was started, and docs whose lines can be copied as they are."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import stat
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "local-run.md"]
# The email of a registration command: `-d '{"payload": {"email": ...` or `--payload '{...`.
REGISTRATION_EMAIL = re.compile(r"(?:-d|--payload) '[^']*?\"email\": \"([^\"]+)\"")


@pytest.fixture()
def run_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    loader = importlib.machinery.SourceFileLoader("run_local", str(ROOT / "scripts/run-local"))
    spec = importlib.util.spec_from_loader("run_local", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    monkeypatch.setattr(module, "RUN_ENV", tmp_path / "var" / "run.env")
    return module


def run_env(**extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "SAGA_API_KEYS": "ops:admin:s3cret 'quoted' $x",
        "FLOWER_BASIC_AUTH": "admin:pw",
        "SAGA_BIND": "127.0.0.1:8008",
        "FLOWER_ADDRESS": "127.0.0.1",
        "FLOWER_PORT": "5555",
        "REDIS_URL": "redis://127.0.0.1:6380/0",
        "AUTH_SERVICE_URL": "http://127.0.0.1:8101",
        "SAGA_URL": "http://127.0.0.1:8008",
        "SAGA_API_KEY": "s3cret 'quoted' $x",
        **extra,
    }


def test_the_run_environment_is_written_and_sources_back(run_local: ModuleType) -> None:
    env = run_env(MAX_CONCURRENT_SAGAS="7", UNRELATED="no")
    path = run_local.write_run_env(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the keys
    sourced = subprocess.run(
        ["bash", "-c", f"set -a; . {path}; set +a; env -0"],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout.decode()
    got = dict(item.split("=", 1) for item in sourced.split("\0") if "=" in item)
    for name in ("SAGA_API_KEYS", "SAGA_API_KEY", "REDIS_URL", "AUTH_SERVICE_URL", "SAGA_URL"):
        assert got[name] == env[name], name
    assert got["MAX_CONCURRENT_SAGAS"] == "7" and "UNRELATED" not in got and "HOME" not in got


def test_the_banner_names_only_what_was_started(run_local: ModuleType) -> None:
    env = run_env()
    some = run_local.banner(env, None, "redis://127.0.0.1:6380/0", ["api", "worker", "demo"])
    assert "Flower" not in some and "5555" not in some
    assert "Processes    api worker demo" in some
    assert "X-API-Key: s3cret 'quoted' $x" in some  # the key, not the NAME:ROLE entry
    assert f"set -a; . {run_local.RUN_ENV}; set +a" in some
    every = run_local.banner(env, "pw", "redis", run_local.procfile_names())
    assert "Flower       http://127.0.0.1:5555/" in every and "Demo services" in every
    assert run_local.procfile_names() == ["api", "worker", "beat", "events", "flower", "demo"]


def test_the_api_key_of_an_entry(run_local: ModuleType) -> None:
    assert run_local.api_key("local-dev-key") == "local-dev-key"
    assert run_local.api_key("ops:admin:k:with:colons, other") == "k:with:colons"


# --- the docs a new user follows -------------------------------------------------------------
def test_the_makefile_line_shown_for_ctrl_c_is_the_run_recipe() -> None:
    makefile = (ROOT / "Makefile").read_text().splitlines()
    shown = re.findall(r"\[Makefile:(\d+): run\]", (ROOT / "docs/local-run.md").read_text())
    assert shown
    for line in shown:
        assert "scripts/run-local" in makefile[int(line) - 1], f"Makefile:{line}"


def test_commands_in_prose_are_not_wrapped() -> None:
    """An inline `command` broken over two lines cannot be copied; longer ones go in a
    code block."""
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for span in re.findall(r"`([^`]+)`", text):
            if "\n" in span:
                assert not re.match(r"\s*(saga-orchestrator|curl|make|scripts/)", span), (
                    doc.name,
                    span,
                )


def test_each_registration_in_the_docs_uses_its_own_email() -> None:
    """The demo auth service refuses a second account for an email (409, so the saga is
    COMPENSATED): following README then docs/local-run.md in order must not repeat one."""
    emails: list[str] = []
    for doc in DOCS:
        emails += re.findall(REGISTRATION_EMAIL, doc.read_text())
    assert emails and len(emails) == len(set(emails)), emails


def test_the_tour_shows_what_each_command_prints() -> None:
    """curl -s prints the body, not the status: the tour's comments say where a status
    comes from; the compensated one is seen with `status --watch`."""
    tour = (ROOT / "README.md").read_text().split("## A first tour", 1)[1].split("```")[1]
    assert not re.search(r"^# (202|200) ", tour, flags=re.M), tour
    fail = tour.split('"fail_at"')[1]
    assert "saga-orchestrator status" in fail.split("COMPENSATED")[0]


def test_the_trigger_example_shows_the_saga_id_its_event_name_derives() -> None:
    """The saga id of a named trigger event is a function of its name: the docs show the
    one the command really gets."""
    from sagas.events import trigger_saga_id

    text = (ROOT / "docs" / "local-run.md").read_text()
    (name,) = re.findall(r"-H 'Idempotency-Key: ([^']+)'", text)
    shown = re.search(r'\{"event_id":"([^"]+)","matched_sagas":\["([0-9a-f-]+)"\]\}', text)
    assert shown is not None
    assert shown.groups() == (name, trigger_saga_id(name, "webhook_processing"))
