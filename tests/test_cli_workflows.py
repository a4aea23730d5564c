"""`saga-orchestrator lint`, `plan` and `workflow push|show|retire` as a team runs them: the
installed script in a subprocess, on files, and against a real API process."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_cli import api_url, cli  # noqa: F401  (api_url: the API process fixture)

BUILTIN = Path(__file__).resolve().parent.parent / "sagas" / "workflows"
KEY = "cli-test-key"


def team_workflow(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "payload_schema": {
            "type": "object",
            "required": ["order_id"],
            "properties": {"order_id": {"type": "string", "minLength": 1}},
        },
        "steps": [
            {
                "name": "reserve",
                "action": {"service": "svc", "path": "/ok/reserve/{{payload.order_id}}"},
                "compensation": {
                    "service": "svc",
                    "method": "DELETE",
                    "path": "/ok/reservations/{{steps.reserve.output.id}}",
                },
            },
            {
                "name": "ship",
                "action": {
                    "event": "shipping.requested",
                    "await": {"success": "shipping.done"},
                    "data": {"order": "{{payload.order_id}}"},
                },
                "compensation": {"service": "svc", "path": "/ok/cancel-shipping"},
                "timeout_seconds": 2,
                "retry": {"max_attempts": 10, "backoff_seconds": 1},
            },
            {
                "name": "email",
                "action": {"service": "svc", "path": "/ok/email"},
                "compensation": "none",
            },
        ],
        **extra,
    }


def write(tmp_path: Path, doc: dict[str, Any], suffix: str = ".yaml") -> Path:
    path = tmp_path / f"{doc['name']}{suffix}"
    path.write_text(yaml.safe_dump(doc) if suffix != ".json" else json.dumps(doc))
    return path


def test_lint_the_builtin_files_passes_with_their_warnings() -> None:
    files = sorted(str(p) for p in BUILTIN.glob("*.yaml"))
    result = cli("lint", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("0 error(s), 1 warning(s)") == 5
    assert "[no-compensation]" in result.stdout


def test_lint_reports_each_warning_rule_and_strict_fails(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    path = write(tmp_path, team_workflow("orders", timeout_seconds=3))
    result = cli("lint", "--json", str(path), env=service_env)
    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = json.loads(result.stdout)
    rules = {w["rule"]: w["field"] for w in report["warnings"]}
    assert rules == {
        "event-without-failure": "steps[1].action.await.failure",
        "retries-exceed-timeout": "steps[1].retry.max_attempts",
        "no-compensation": "steps[2].compensation",
        "step-timeouts-above-saga": "timeout_seconds",
        "no-examples": "examples",
    }
    assert cli("lint", "--strict", str(path), env=service_env).returncode == 1


def test_lint_errors_exit_1_and_name_the_field(tmp_path: Path, service_env: dict[str, str]) -> None:
    doc = team_workflow("orders")
    doc["steps"][0]["compensation"]["path"] = "/ok/x/{{steps.ship.output.id}}"
    del doc["steps"][2]["compensation"]
    later = write(tmp_path, doc, ".json")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    result = cli("lint", str(later), str(broken), env=service_env)
    assert result.returncode == 1
    assert "error [compensation-missing] steps[2].compensation" in result.stdout
    assert "error [output-of-later-step] steps[0].compensation" in result.stdout  # both
    assert "error [syntax] $" in result.stdout
    doc["steps"][2]["compensation"] = "none"
    later.write_text(json.dumps(doc))
    result = cli("lint", str(later), env=service_env)
    assert "error [output-of-later-step] steps[0].compensation" in result.stdout, result.stdout


def test_plan_prints_runs_and_undos_in_order(tmp_path: Path, service_env: dict[str, str]) -> None:
    path = write(tmp_path, team_workflow("orders"))
    result = cli("plan", str(path), "--fail-at", "email", env=service_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Plan for orders, email fails"
    undo = lines.index("Compensates, newest first:")
    assert "ship" in lines[undo + 1] and "reserve" in lines[undo + 2]
    uncertain = json.loads(
        cli("plan", str(path), "--fail-at", "ship", "--uncertain", "--json", env=service_env).stdout
    )
    assert [c["step"] for c in uncertain["compensate"]] == ["ship", "reserve"]
    assert uncertain["skipped"] == ["email"]
    bad = cli("plan", str(path), "--fail-at", "nope", env=service_env)
    assert bad.returncode == 1 and "invalid fail_at" in bad.stderr


def test_push_show_retire_through_the_api(
    api_url: str,  # noqa: F811
    tmp_path: Path,
    service_env: dict[str, str],
) -> None:
    name = f"orders_{uuid.uuid4().hex[:8]}"
    doc = team_workflow(name)
    doc["steps"][1] = {**doc["steps"][1], "timeout_seconds": 20, "retry": {"max_attempts": 2}}
    path = write(tmp_path, doc)
    env = {**service_env, "SAGA_URL": api_url, "SAGA_API_KEY": KEY}
    first = cli("workflow", "push", str(path), env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"{name}: registered as version 1"
    assert cli("workflow", "push", str(path), env=env).stdout.strip() == (
        f"{name}: unchanged: still version 1, active"
    )
    shown = cli("workflow", "show", name, env=env)
    assert shown.stdout.startswith(f"{name} v1 (latest v1, active)"), shown.stdout
    retired = cli("workflow", "retire", name, env=env)
    assert retired.stdout.strip() == f"{name}: retired (latest version 1)"
    refused = cli("start", name, "--payload", '{"order_id": "o-1"}', env=env)
    assert refused.returncode == 1 and "retired" in refused.stderr


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_workflows_dir_is_registered_at_start_up(
    tmp_path: Path, service_env: dict[str, str], suffix: str
) -> None:
    """SAGA_WORKFLOWS_DIR files become registered workflows in a process that starts with
    it; a refused file stops that process naming the file and the field."""
    name = f"dir_{uuid.uuid4().hex[:8]}"
    write(tmp_path, team_workflow(name), suffix)
    code = (
        "from sagas.settings import Settings; from tasks.runtime import build_engine; "
        f"e = build_engine(Settings.from_env()); print(e.workflows.get({name!r}).version)"
    )
    env = {**service_env, "SAGA_WORKFLOWS_DIR": str(tmp_path)}
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == "1", ok.stderr[-2000:]
    bad = team_workflow(f"bad_{name}")
    del bad["steps"][0]["compensation"]
    write(tmp_path, bad, suffix)
    failed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert failed.returncode == 1
    assert f"bad_{name}{suffix}: invalid steps[0].compensation" in failed.stderr


def test_schedule_commands_through_the_api(
    api_url: str,  # noqa: F811
    tmp_path: Path,
    service_env: dict[str, str],
) -> None:
    name = f"orders_{uuid.uuid4().hex[:8]}"
    doc = team_workflow(name)
    doc["steps"][1] = {**doc["steps"][1], "timeout_seconds": 20, "retry": {"max_attempts": 2}}
    env = {**service_env, "SAGA_URL": api_url, "SAGA_API_KEY": KEY}
    assert cli("workflow", "push", str(write(tmp_path, doc)), env=env).returncode == 0
    created = cli(
        "schedule", "create", name, "--cron", "0 9 * * 1-5", "--timezone", "Europe/Paris",
        "--payload", '{"order_id": "o-1"}', "--json", env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    sid = json.loads(created.stdout)["schedule_id"]
    listed = cli("schedule", "list", env=env).stdout
    assert f"{sid}  {name}  cron '0 9 * * 1-5' Europe/Paris  active" in listed
    paused = cli("schedule", "pause", sid, env=env)
    assert paused.stdout.startswith(f"{sid}  {name}") and "  paused  " in paused.stdout
    assert "  active  " in cli("schedule", "resume", sid, env=env).stdout
    deleted = cli("schedule", "delete", sid, env=env)
    assert deleted.stdout.strip() == f"{sid}: deleted", deleted.stderr
    gone = cli("schedule", "pause", sid, env=env)
    assert gone.returncode == 1 and "no schedule" in gone.stderr
    bad = cli("schedule", "create", name, "--cron", "nope", env=env)
    assert bad.returncode == 1 and "cron" in bad.stderr


def test_the_documented_example_lints_and_plans_as_docs_workflows_md_shows() -> None:
    example = BUILTIN.parent.parent / "docs" / "examples" / "trial_signup.yaml"
    # The documented defaults (SAGA_STEP_TIMEOUT_SECONDS 300): the conftest changes them.
    env = {"SAGA_STEP_TIMEOUT_SECONDS": "300", "SAGA_TIMEOUT_SECONDS": "3600"}
    result = cli("lint", str(example), env=env)
    assert result.returncode == 0 and "0 error(s), 2 warning(s)" in result.stdout, result.stdout
    plan = cli("plan", str(example), "--fail-at", "reserve_quota")
    assert "Never runs: welcome" in plan.stdout and "Final status: COMPENSATED" in plan.stdout
    doc = (BUILTIN.parent.parent / "docs" / "workflows.md").read_text()
    assert plan.stdout.strip() in doc  # the documented output is the command's
