"""Configuration from the environment (docs/configuration.md lists every variable).

Every component (API, worker, beat, CLI) builds one `Settings` with `Settings.from_env()`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from sagas.errors import ConfigurationError

DEFAULT_SEED_SERVICES = {
    "auth": ("AUTH_SERVICE_URL", "http://platform-services:8007"),
    "airtable": ("AIRTABLE_CONNECTOR_URL", "http://airtable-gateway:8002"),
    "notification": ("NOTIFICATION_SERVICE_URL", "http://automation-services:8006"),
}


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    key_prefix: str = "saga:"  # every key of the store starts with it
    queue: str = "sagas"  # Celery queue of step and compensation tasks
    # Celery queue of the beat sweep ("" = `<queue>.sweep`): out of the steps' way in Flower
    # and in the queue, and its depth tells whether a worker consumes it (GET /health/).
    sweep_queue: str = ""
    # Prefix of the broker's (kombu's) keys ("" = `<key_prefix>kombu:`): queues are Redis
    # lists named `<broker_key_prefix><queue>`.
    broker_key_prefix: str = ""
    saga_timeout_seconds: float = 3600
    step_timeout_seconds: float = 300
    retry_attempts: int = 3
    retry_backoff_seconds: float = 1.0
    retry_max_backoff_seconds: float = 30.0
    compensation_timeout_seconds: float = 600
    max_concurrent_sagas: int = 100
    sweep_interval_seconds: float = 5
    retention_seconds: int = 604800
    max_steps: int = 50
    max_payload_bytes: int = 256 * 1024
    max_output_bytes: int = 256 * 1024  # a larger step output is stored as a stub
    history_limit: int = 500  # entries kept per saga
    services: Mapping[str, str] = field(default_factory=dict)
    task_modules: tuple[str, ...] = ()
    visibility_timeout_seconds: int = 3600
    redrive_after_seconds: float = 60  # no sign of life for this long: the sweep re-drives
    events_maxlen: int = 100_000  # entries kept per stream (approximately)
    event_max_deliveries: int = 5  # an event failing this often goes to the dead letters
    event_reclaim_idle_seconds: float = 30  # a consumer silent this long: its entries move
    # An execution's hard time limit is its step's (or compensation's) timeout plus this:
    # the store calls around the attempt. Past it Celery kills the execution, so an attempt
    # in flight has provably ended and its compensation may start.
    attempt_grace_seconds: float = 10
    # How often a Redis client resends a command after a connection error or timeout
    # (exponential backoff, about 15 s in all with 12); then the execution retries later.
    redis_retries: int = 12
    # Celery task events (task-sent/-received/-succeeded...): what Flower shows. Off, a
    # deployment without Flower saves their cost on every task of a step and compensation.
    task_events: bool = True
    # Completion webhooks (sagas/webhooks.py). Secrets per service, newest first: every one
    # signs each delivery (rotation); never logged, never shown (repr=False).
    webhook_secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    webhook: Mapping[str, str] | None = None  # the deployment's default {service, path}
    webhook_max_seconds: float = 86400  # retried this long after the status, then a dead letter
    webhook_timeout_seconds: float = 10  # one delivery attempt
    webhook_backoff_seconds: float = 1.0  # first retry; doubles per attempt, with jitter
    webhook_max_backoff_seconds: float = 600
    # Directories of workflow files (YAML or JSON) registered at start-up next to the
    # built-in ones (SAGA_WORKFLOWS_DIR, ':'-separated; docs/workflows.md).
    workflows_dirs: tuple[str, ...] = ()
    # celery-redbeat's lock: one beat ticks; another takes over this long after it died.
    beat_lock_seconds: float = 30

    def __post_init__(self) -> None:
        if not self.sweep_queue:
            object.__setattr__(self, "sweep_queue", default_sweep_queue(self.queue))
        if not self.broker_key_prefix:
            object.__setattr__(self, "broker_key_prefix", f"{self.key_prefix}kombu:")
        # A task still running when the broker's visibility timeout passes is delivered a
        # second time while it runs: every execution (time limit included) and every retry
        # countdown must end before it.
        vt = self.visibility_timeout_seconds
        grace = f" plus SAGA_ATTEMPT_GRACE_SECONDS={self.attempt_grace_seconds:g}"
        for name, value, extra in (
            ("SAGA_STEP_TIMEOUT_SECONDS", self.step_timeout_seconds, grace),
            ("COMPENSATION_TIMEOUT_SECONDS", self.compensation_timeout_seconds, grace),
            ("SAGA_RETRY_MAX_BACKOFF_SECONDS", self.retry_max_backoff_seconds, ""),
            ("SAGA_WEBHOOK_TIMEOUT_SECONDS", self.webhook_timeout_seconds, grace),
            ("SAGA_WEBHOOK_MAX_BACKOFF_SECONDS", self.webhook_max_backoff_seconds, ""),
        ):
            total = value + (self.attempt_grace_seconds if extra else 0)
            if total >= vt:
                raise ConfigurationError(
                    f"{name}={value:g}{extra} must be below SAGA_VISIBILITY_TIMEOUT_SECONDS={vt}"
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the environment; raise `ConfigurationError` naming the variable that is wrong."""
        env = os.environ if environ is None else environ
        visibility = int(_number(env, "SAGA_VISIBILITY_TIMEOUT_SECONDS", 3600, minimum=5))
        return cls(
            redis_url=_redis_url(env),
            key_prefix=env.get("SAGA_KEY_PREFIX", "saga:"),
            queue=env.get("SAGA_QUEUE", "sagas"),
            sweep_queue=env.get("SAGA_SWEEP_QUEUE", ""),
            broker_key_prefix=env.get("SAGA_BROKER_KEY_PREFIX", ""),
            saga_timeout_seconds=_number(env, "SAGA_TIMEOUT_SECONDS", 3600),
            step_timeout_seconds=_number(env, "SAGA_STEP_TIMEOUT_SECONDS", 300),
            retry_attempts=int(_number(env, "SAGA_RETRY_ATTEMPTS", 3, minimum=1)),
            retry_backoff_seconds=_number(env, "SAGA_RETRY_BACKOFF_SECONDS", 1.0, minimum=0),
            retry_max_backoff_seconds=_number(env, "SAGA_RETRY_MAX_BACKOFF_SECONDS", 30.0),
            compensation_timeout_seconds=_number(env, "COMPENSATION_TIMEOUT_SECONDS", 600),
            max_concurrent_sagas=int(_number(env, "MAX_CONCURRENT_SAGAS", 100, minimum=1)),
            sweep_interval_seconds=_number(env, "SAGA_SWEEP_INTERVAL_SECONDS", 5),
            retention_seconds=int(_number(env, "SAGA_RETENTION_SECONDS", 604800)),
            max_steps=int(_number(env, "SAGA_MAX_STEPS", 50, minimum=1)),
            max_payload_bytes=int(_number(env, "SAGA_MAX_PAYLOAD_BYTES", 256 * 1024)),
            max_output_bytes=int(_number(env, "SAGA_MAX_OUTPUT_BYTES", 256 * 1024)),
            services=_services(env),
            beat_lock_seconds=_number(env, "SAGA_BEAT_LOCK_SECONDS", 30, minimum=6),
            workflows_dirs=tuple(
                d for d in env.get("SAGA_WORKFLOWS_DIR", "").split(os.pathsep) if d.strip()
            ),
            task_modules=tuple(
                m.strip() for m in env.get("SAGA_TASK_MODULES", "").split(",") if m.strip()
            ),
            redrive_after_seconds=_number(env, "SAGA_REDRIVE_AFTER_SECONDS", 60),
            events_maxlen=int(_number(env, "SAGA_EVENTS_MAXLEN", 100_000, minimum=100)),
            event_max_deliveries=int(_number(env, "SAGA_EVENT_MAX_DELIVERIES", 5, minimum=1)),
            event_reclaim_idle_seconds=_number(env, "SAGA_EVENT_RECLAIM_IDLE_SECONDS", 30),
            visibility_timeout_seconds=visibility,
            attempt_grace_seconds=_number(env, "SAGA_ATTEMPT_GRACE_SECONDS", 10, minimum=0.5),
            redis_retries=int(_number(env, "SAGA_REDIS_RETRIES", 12, minimum=0)),
            task_events=_switch(env, "SAGA_TASK_EVENTS", True),
            webhook_secrets=_webhook_secrets(env),
            webhook=_webhook(env),
            webhook_max_seconds=_number(env, "SAGA_WEBHOOK_MAX_SECONDS", 86400),
            webhook_timeout_seconds=_number(env, "SAGA_WEBHOOK_TIMEOUT_SECONDS", 10),
            webhook_backoff_seconds=_number(env, "SAGA_WEBHOOK_BACKOFF_SECONDS", 1.0),
            # A retry countdown must end within the visibility timeout (checked below): the
            # default cap fits a short one too.
            webhook_max_backoff_seconds=_number(
                env, "SAGA_WEBHOOK_MAX_BACKOFF_SECONDS", min(600, visibility / 2)
            ),
        )


def default_sweep_queue(queue: str) -> str:
    """The sweep's Celery queue when SAGA_SWEEP_QUEUE is not set: a worker started with
    `-Q <queue>` must list it too (`-Q <queue>,<queue>.sweep`)."""
    return f"{queue}.sweep"


def _number(env: Mapping[str, str], name: str, default: float, minimum: float = 0.001) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigurationError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={raw!r} must be 1 or 0 (true/false, yes/no, on/off)")


def _redis_url(env: Mapping[str, str]) -> str:
    url = env.get("REDIS_URL") or "redis://localhost:6379/0"
    password = env.get("REDIS_PASSWORD")
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"REDIS_URL must be a redis:// URL, got scheme {parts.scheme!r}")
    if password and not parts.password and parts.scheme != "unix":
        netloc = f":{quote(password, safe='')}@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


def _services(env: Mapping[str, str]) -> dict[str, str]:
    services = {
        name: env.get(var) or default for name, (var, default) in DEFAULT_SEED_SERVICES.items()
    }
    raw = env.get("SAGA_SERVICES", "") or "{}"
    try:
        extra = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"SAGA_SERVICES is not JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise ConfigurationError("SAGA_SERVICES must be a JSON object: name -> base URL")
    services.update(extra)
    for name, base in services.items():
        parts = urlsplit(str(base))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"service {name!r}: {base!r} is not an http(s) base URL")
        if parts.query or parts.fragment:
            raise ConfigurationError(f"service {name!r}: a base URL has no query or fragment")
        services[name] = str(base).rstrip("/")
    return services


# Secrets a service may sign with at once: the current one and those being rotated out.
MAX_WEBHOOK_SECRETS = 4


def _webhook_secrets(env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """SAGA_WEBHOOK_SECRETS: {"service": ["whsec_...", ...]}. Errors never quote a secret."""
    name = "SAGA_WEBHOOK_SECRETS"
    try:
        raw = json.loads(env.get("SAGA_WEBHOOK_SECRETS", "") or "{}")
    except json.JSONDecodeError:
        raise ConfigurationError(f"{name} is not JSON") from None  # the text holds secrets
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{name} must be a JSON object: service -> [secret, ...]")
    secrets: dict[str, tuple[str, ...]] = {}
    for service, values in raw.items():
        if isinstance(values, str):
            values = [values]
        if (
            not isinstance(values, list)
            or not 1 <= len(values) <= MAX_WEBHOOK_SECRETS
            or not all(isinstance(v, str) for v in values)
        ):
            raise ConfigurationError(
                f"{name}: service {service!r} needs a list of 1 to {MAX_WEBHOOK_SECRETS} secrets"
            )
        for k, value in enumerate(values):
            if not _is_webhook_secret(value):
                raise ConfigurationError(
                    f"{name}: secret {k + 1} of service {service!r} is not a Standard Webhooks "
                    "secret ('whsec_' + base64 of 24 to 64 random bytes)"
                )
        secrets[str(service)] = tuple(values)
    return secrets


def _webhook(env: Mapping[str, str]) -> dict[str, str] | None:
    """SAGA_WEBHOOK: the default {"service", "path"} of sagas that name none (the engine
    checks it against the registered services and secrets when it starts)."""
    raw = env.get("SAGA_WEBHOOK", "")
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"SAGA_WEBHOOK is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigurationError('SAGA_WEBHOOK must be a JSON object {"service", "path"}')
    return value


def _is_webhook_secret(value: str) -> bool:
    """`whsec_` + strict base64 of 24 to 64 bytes, as the Standard Webhooks spec has it, and
    accepted by the library (whose own decoding is lenient: it skips stray characters)."""
    if not value.startswith("whsec_"):
        return False
    try:
        key = base64.b64decode(value[len("whsec_") :], validate=True)
        Webhook(value)
    except (binascii.Error, ValueError, EmptyWebhookSecretError):
        return False
    return 24 <= len(key) <= 64
