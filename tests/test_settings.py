"""Configuration from the environment: names and defaults (docs/configuration.md), errors."""

from __future__ import annotations

import pytest

from sagas.errors import ConfigurationError
from sagas.settings import Settings


def test_defaults_follow_the_contract() -> None:
    """With an empty environment the seed's defaults apply, seed services included."""
    s = Settings.from_env({})
    assert s.redis_url == "redis://localhost:6379/0"
    assert (s.saga_timeout_seconds, s.step_timeout_seconds, s.retry_attempts) == (3600, 300, 3)
    assert (s.compensation_timeout_seconds, s.max_concurrent_sagas) == (600, 100)
    assert (s.sweep_interval_seconds, s.retention_seconds) == (5, 604800)
    assert s.services == {
        "auth": "http://platform-services:8007",
        "airtable": "http://airtable-gateway:8002",
        "notification": "http://automation-services:8006",
    }


def test_services_and_password_from_environment() -> None:
    """SAGA_SERVICES adds services; REDIS_PASSWORD goes into the URL, percent-encoded."""
    s = Settings.from_env(
        {
            "SAGA_SERVICES": '{"inventory": "http://inv:80/api/"}',
            "AUTH_SERVICE_URL": "https://auth.internal",
            "REDIS_URL": "redis://cache:6380/3",
            "REDIS_PASSWORD": "p@ss",
        }
    )
    assert s.services["inventory"] == "http://inv:80/api"
    assert s.services["auth"] == "https://auth.internal"
    assert s.redis_url == "redis://:p%40ss@cache:6380/3"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"SAGA_TIMEOUT_SECONDS": "soon"}, "SAGA_TIMEOUT_SECONDS"),
        ({"SAGA_RETRY_ATTEMPTS": "0"}, "SAGA_RETRY_ATTEMPTS"),
        ({"SAGA_SERVICES": "{not json"}, "SAGA_SERVICES"),
        ({"SAGA_SERVICES": "[]"}, "SAGA_SERVICES"),
        ({"SAGA_SERVICES": '{"x": "ftp://x"}'}, "'x'"),
        ({"REDIS_URL": "http://redis"}, "REDIS_URL"),
        ({"SAGA_STEP_TIMEOUT_SECONDS": "4000"}, "SAGA_STEP_TIMEOUT_SECONDS=4000 plus"),
        (
            {
                "SAGA_VISIBILITY_TIMEOUT_SECONDS": "60",
                "SAGA_STEP_TIMEOUT_SECONDS": "30",
                "COMPENSATION_TIMEOUT_SECONDS": "30",
                "SAGA_RETRY_MAX_BACKOFF_SECONDS": "90",
            },
            "SAGA_RETRY_MAX_BACKOFF_SECONDS",
        ),
        (
            {"SAGA_VISIBILITY_TIMEOUT_SECONDS": "60", "SAGA_STEP_TIMEOUT_SECONDS": "30"},
            "COMPENSATION_TIMEOUT_SECONDS=600 plus SAGA_ATTEMPT_GRACE_SECONDS=10 must be below",
        ),
        (
            {
                "SAGA_VISIBILITY_TIMEOUT_SECONDS": "60",
                "SAGA_STEP_TIMEOUT_SECONDS": "55",
                "COMPENSATION_TIMEOUT_SECONDS": "30",
            },
            "SAGA_STEP_TIMEOUT_SECONDS=55 plus SAGA_ATTEMPT_GRACE_SECONDS=10 must be below",
        ),
    ],
)
def test_invalid_environment_names_the_variable(env: dict[str, str], names: str) -> None:
    """A wrong variable stops start-up with an error that names it."""
    with pytest.raises(ConfigurationError, match=names):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("raw", "expected"), [("", True), ("1", True), ("on", True), ("0", False), ("False", False)]
)
def test_task_events_switch(raw: str, expected: bool) -> None:
    """SAGA_TASK_EVENTS: on by default (Flower shows them), off for a deployment without it;
    celeryconfig hands it to the workers."""
    assert Settings.from_env({"SAGA_TASK_EVENTS": raw}).task_events is expected


def test_a_switch_that_is_neither_on_nor_off_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="SAGA_TASK_EVENTS='maybe' must be 1 or 0"):
        Settings.from_env({"SAGA_TASK_EVENTS": "maybe"})


def test_the_webhook_backoff_cap_fits_a_short_visibility_timeout() -> None:
    """Its default is capped by the visibility timeout (a countdown must end within it), so
    that a deployment with a short one needs no webhook setting; an explicit cap above it is
    refused, naming both variables."""
    assert Settings.from_env({}).webhook_max_backoff_seconds == 600
    short = {
        "SAGA_VISIBILITY_TIMEOUT_SECONDS": "20",
        "SAGA_STEP_TIMEOUT_SECONDS": "6",
        "COMPENSATION_TIMEOUT_SECONDS": "5",
        "SAGA_RETRY_MAX_BACKOFF_SECONDS": "1",
        "SAGA_ATTEMPT_GRACE_SECONDS": "2",
    }
    assert Settings.from_env(short).webhook_max_backoff_seconds == 10
    with pytest.raises(ConfigurationError, match="SAGA_WEBHOOK_MAX_BACKOFF_SECONDS=30 must be"):
        Settings.from_env({**short, "SAGA_WEBHOOK_MAX_BACKOFF_SECONDS": "30"})
