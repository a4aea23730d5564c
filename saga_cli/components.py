"""The component commands: `api`, `worker`, `beat`, `flower`, `events`, `demo-services`.

Each becomes (exec) or runs the component; unknown options pass through to gunicorn, Celery or
Flower. What a component needs (wsgi, Celery, the engine) is imported inside its command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import click

# gunicorn options after which it exits without serving (no master, no exit hooks).
ONE_SHOT_GUNICORN_OPTIONS = ("--check-config", "--print-config", "-v", "--version", "-h")
PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command(context_settings=PASSTHROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker (extra options go to `celery worker`)."""
    from wsgi import celery_app

    celery_app.worker_main([*_quiet_banner(celery_args), "worker", *celery_args])


@click.command(context_settings=PASSTHROUGH)
@click.option(
    "-b",
    "--bind",
    "binds",
    multiple=True,
    metavar="HOST:PORT",
    help="Address to listen on (default: $SAGA_BIND, else 0.0.0.0:8008). Repeatable.",
)
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def api(binds: tuple[str, ...], gunicorn_args: tuple[str, ...]) -> None:
    """Run the REST API under gunicorn with gunicorn.conf.py.

    Extra options go to gunicorn (e.g. `-w 4`, `--timeout 60`; `-c FILE` replaces
    gunicorn.conf.py). Workers: $WEB_CONCURRENCY (default 4). Prometheus multiprocess metrics
    go to $PROMETHEUS_MULTIPROC_DIR, wiped at start; unset, a fresh temporary directory is used
    and removed at exit.
    """
    if not _has_option(gunicorn_args, *ONE_SHOT_GUNICORN_OPTIONS):
        _check_api_configuration()
    argv = [sys.executable, "-m", "gunicorn"]
    if not _has_option(gunicorn_args, "-c", "--config"):
        argv += ["-c", str(_gunicorn_config())]
    for bind in binds:
        argv += ["--bind", bind]
    own_dir = _prepare_prometheus_dir()
    if own_dir and _has_option(gunicorn_args, *ONE_SHOT_GUNICORN_OPTIONS):
        # gunicorn exits without starting its master, so its exit hook cannot remove the
        # directory: run it as a child and clean up here.
        try:
            code = subprocess.call([*argv, *gunicorn_args])
        finally:
            shutil.rmtree(own_dir, ignore_errors=True)
        sys.exit(code)
    _exec([*argv, *gunicorn_args])


@click.command(context_settings=PASSTHROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Run Celery beat, the scheduler of periodic tasks.

    Extra options go to `celery beat` (e.g. `--loglevel INFO`). Its entries (the sweep and
    every schedule) and its lock live in Redis (celery-redbeat, celeryconfig.py): no schedule
    file, and several beats may run, one ticking (`--schedule` is accepted and unused).
    """
    argv = [sys.executable, "-m", "celery", "-A", "wsgi:celery_app"]
    _exec([*argv, *_quiet_banner(celery_args), "beat", *celery_args])


@click.command(context_settings=PASSTHROUGH)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Run without authentication (only on a machine nobody else can reach).",
)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(no_auth: bool, flower_args: tuple[str, ...]) -> None:
    """Run Flower, the Celery monitor, on port 5555 with basic auth.

    Credentials come from FLOWER_BASIC_AUTH (`user:password`), which Flower reads itself, so the
    password appears neither on the command line nor in the logs. Without it Flower does not
    start, unless --no-auth is given. Extra options go to Flower, in the `--name=value` form
    (e.g. `--port=5556`, `--address=127.0.0.1`); each is also read from FLOWER_<NAME>.
    """
    env = dict(os.environ)
    credentials = env.get("FLOWER_BASIC_AUTH", "")
    if no_auth:
        env.pop("FLOWER_BASIC_AUTH", None)
        click.echo("Warning: Flower runs WITHOUT authentication (--no-auth).", err=True)
    elif credentials:
        for entry in credentials.split(","):
            user, sep, password = entry.partition(":")
            if not (user and sep and password):
                raise click.ClickException(
                    "FLOWER_BASIC_AUTH must be `user:password` (several separated by commas), "
                    "both parts non-empty"
                )
    elif not _has_option(flower_args, "--basic_auth", "--basic-auth"):
        raise click.ClickException(
            "Flower needs credentials: set FLOWER_BASIC_AUTH=user:password "
            "(or pass --no-auth to run it without authentication, on a private machine only)"
        )
    # saga_cli.flower_app: the Celery app with the project's logging set up first, so
    # that Flower (tornado) logs in the same format instead of adding a handler of its own.
    app = "saga_cli.flower_app:celery_app"
    argv = [sys.executable, "-m", "celery", "-A", app, *_quiet_banner(flower_args)]
    _exec([*argv, "flower", *flower_args], env=env)


@click.command()
@click.option("--name", default=None, help="Consumer name in the group (default: host-pid).")
def events(name: str | None) -> None:
    """Consume the events stream (choreography): apply replies to waiting event steps and
    start event-triggered workflows. Run one or more; a dead one's entries are reclaimed by
    the sweep."""
    import os
    import socket
    import threading

    import wsgi  # noqa: F401  (configures Celery: the consumer enqueues the next steps)
    from sagas.events import run_consumer
    from sagas.log import configure_logging
    from sagas.settings import Settings
    from tasks.runtime import build_engine, start_tracing

    configure_logging()
    start_tracing("saga-events")  # when OTEL_* ask for it (docs/observability.md)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    consumer = name or f"{socket.gethostname()}-{os.getpid()}"
    run_consumer(build_engine(Settings.from_env()), consumer, stop)


@click.command("demo-services")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--auth-port", type=int, default=8101, show_default=True)
@click.option("--airtable-port", type=int, default=8102, show_default=True)
@click.option("--notification-port", type=int, default=8103, show_default=True)
@click.option(
    "--redis-url",
    envvar="REDIS_URL",
    show_envvar=True,
    default=None,
    help="Redis whose commands stream the notification service consumes (choreography: "
    "ai_analysis's run_analysis step). Without it the services speak HTTP only.",
)
@click.option(
    "--key-prefix",
    # read like the orchestrator's Settings: an empty SAGA_KEY_PREFIX is an empty prefix
    default=lambda: os.environ.get("SAGA_KEY_PREFIX", "saga:"),
    show_default="$SAGA_KEY_PREFIX, else saga:",
    help="The orchestrator's key prefix: streams <prefix>stream:commands and :events.",
)
def demo_services(
    host: str,
    auth_port: int,
    airtable_port: int,
    notification_port: int,
    redis_url: str | None,
    key_prefix: str,
) -> None:
    """Play the auth, airtable and notification services for local runs and demos.

    Point the orchestrator at them with AUTH_SERVICE_URL=http://127.0.0.1:8101,
    AIRTABLE_CONNECTOR_URL=http://127.0.0.1:8102, NOTIFICATION_SERVICE_URL=http://127.0.0.1:8103.
    With a Redis URL the notification service also consumes <prefix>stream:commands
    (consumer group demo-automation) and replies on <prefix>stream:events.
    """
    try:
        from demo.services import serve
    except ModuleNotFoundError as exc:
        if exc.name not in ("demo", "demo.services"):
            raise
        raise click.ClickException(f"the demo services are not installed ({exc})") from None

    from sagas.log import configure_logging

    configure_logging()
    # honcho and service managers stop processes with SIGTERM: shut down like on Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        serve(
            host=host,
            ports={"auth": auth_port, "airtable": airtable_port, "notification": notification_port},
            redis_url=redis_url or None,
            key_prefix=key_prefix,
        )


def _check_api_configuration() -> None:
    """Fail with one line, before gunicorn binds, on what would make every worker fail to
    build the API (no API keys, a malformed variable): gunicorn would print "Listening at",
    a traceback per worker, then exit."""
    from app import config as app_config
    from app.auth import configured_keys
    from sagas.errors import ConfigurationError
    from sagas.settings import Settings

    try:
        Settings.from_env()
        api_config = app_config.from_env()
        configured_keys(api_config["API_KEYS"], api_config["ALLOW_ANONYMOUS"])
    except ConfigurationError as exc:
        raise click.ClickException(f"cannot start the API: {exc}") from None


def _quiet_banner(args: Sequence[str]) -> list[str]:
    """Celery's global `--quiet` (no banner on stdout; it goes before the subcommand) when
    the log format is JSON lines (SAGA_LOG_FORMAT), unless the banner is asked for: every
    line the process writes is then JSON."""
    from sagas.log import log_format

    if log_format() != "json" or _has_option(args, "-q", "--quiet", "--no-quiet"):
        return []
    return ["--quiet"]


def _has_option(args: Sequence[str], *names: str) -> bool:
    """Whether `args` already carries one of the options `names` (`-x V`, `-xV`, `--x=V`)."""
    for arg in args:
        for name in names:
            if arg == name or (name.startswith("--") and arg.startswith(name + "=")):
                return True
            if len(name) == 2 and arg.startswith(name) and not arg.startswith("--"):
                return True
    return False


def _gunicorn_config() -> Path:
    # The project directory holds this package (an editable install or a checkout).
    for candidate in (Path(__file__).resolve().parent.parent, Path.cwd()):
        path = candidate / "gunicorn.conf.py"
        if path.is_file():
            return path
    raise click.ClickException(
        "gunicorn.conf.py was found neither next to the saga_cli package nor in the current "
        "directory: run from the project directory or pass `-c FILE`"
    )


def _prepare_prometheus_dir() -> str | None:
    """Multiprocess metrics need a directory that exists and holds no stale files at start.
    Returns the directory if it was made for this run only."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix="saga-prometheus-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        os.environ["SAGA_PROMETHEUS_TMP_DIR"] = path  # gunicorn.conf.py removes it at exit
        return path
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Only prometheus_client's own files: the variable may name a shared directory.
        for stale in directory.glob("*.db"):
            stale.unlink()
    except OSError as exc:
        raise click.ClickException(
            f"PROMETHEUS_MULTIPROC_DIR={path}: cannot prepare it ({exc.strerror})"
        ) from None
    return None


def _exec(argv: list[str], env: Mapping[str, str] | None = None) -> NoReturn:
    """Become the component (same pid: signals from honcho or systemd reach it directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, dict(os.environ if env is None else env))
