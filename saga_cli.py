"""The `saga-orchestrator` command: runs the components and talks to the REST API.

Component commands (`api`, `worker`, `beat`, `events`, `flower`, `demo-services`) pass
unknown options through to gunicorn, Celery or Flower. Client commands (`start`, `status`, `list`,
`compensate`) call the API over HTTP; they import httpx and rich only when they run, so that
`--help` and the component commands start fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import click

DEFAULT_URL = "http://127.0.0.1:8008"
FINAL_STATUSES = ("COMPLETED", "COMPENSATED", "COMPENSATION_FAILED")
# gunicorn options after which it exits without serving (no master, no exit hooks).
ONE_SHOT_GUNICORN_OPTIONS = ("--check-config", "--print-config", "-v", "--version", "-h")
PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}
STATUS_STYLES = {
    "PENDING": "dim",
    "RUNNING": "cyan",
    "WAITING": "blue",
    "COMPLETED": "green",
    "FAILED": "red",
    "SKIPPED": "dim",
    "COMPENSATING": "yellow",
    "COMPENSATED": "yellow",
    "COMPENSATION_FAILED": "bold red",
}


@click.group()
def main() -> None:
    """Saga orchestrator: distributed transactions with compensation.

    \b
    Components: api, worker, beat, events, flower, demo-services.
    API client: start, status, list, compensate.
    """


# --- components ------------------------------------------------------------------------------


@main.command(context_settings=PASSTHROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker (extra options go to `celery worker`)."""
    from wsgi import celery_app

    celery_app.worker_main(["worker", *celery_args])


@main.command(context_settings=PASSTHROUGH)
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


@main.command(context_settings=PASSTHROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Run Celery beat, the scheduler of periodic tasks.

    Extra options go to `celery beat` (e.g. `--loglevel INFO`). The schedule file is
    var/celerybeat-schedule under the current directory unless `--schedule` is given.
    """
    argv = [sys.executable, "-m", "celery", "-A", "wsgi:celery_app", "beat"]
    if not _has_option(celery_args, "-s", "--schedule"):
        var = Path("var")
        try:
            var.mkdir(exist_ok=True)
        except OSError as exc:
            raise click.ClickException(
                f"cannot create {var.resolve()} for the beat schedule ({exc.strerror}): "
                "pass --schedule PATH"
            ) from None
        argv += ["--schedule", str(var / "celerybeat-schedule")]
    _exec([*argv, *celery_args])


@main.command(context_settings=PASSTHROUGH)
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
    _exec(
        [sys.executable, "-m", "celery", "-A", "wsgi:celery_app", "flower", *flower_args],
        env=env,
    )


@main.command()
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
    from tasks.runtime import build_engine

    configure_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    consumer = name or f"{socket.gethostname()}-{os.getpid()}"
    run_consumer(build_engine(Settings.from_env()), consumer, stop)


@main.command("demo-services")
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

    # honcho and service managers stop processes with SIGTERM: shut down like on Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        serve(
            host=host,
            ports={"auth": auth_port, "airtable": airtable_port, "notification": notification_port},
            redis_url=redis_url or None,
            key_prefix=key_prefix,
        )


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
    for candidate in (Path(__file__).resolve().parent, Path.cwd()):
        path = candidate / "gunicorn.conf.py"
        if path.is_file():
            return path
    raise click.ClickException(
        "gunicorn.conf.py was found neither next to saga_cli.py nor in the current directory: "
        "run from the project directory or pass `-c FILE`"
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


# --- API client ------------------------------------------------------------------------------


class ApiError(click.ClickException):
    """An answer or a failure of the API, shown readably on stderr; exit code 1."""


class Api:
    def __init__(self, url: str, api_key: str | None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        import httpx

        all_headers = {"Accept": "application/json", **(headers or {})}
        if self.api_key:
            all_headers["X-API-Key"] = self.api_key
        url = self.url + path
        try:
            response = httpx.request(
                method,
                url,
                json=body,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers=all_headers,
                timeout=self.timeout,
                follow_redirects=True,
            )
        except httpx.TimeoutException:
            raise ApiError(
                f"the saga API at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise click.BadParameter(f"{self.url!r}: {exc}", param_hint="--url") from None
        except httpx.TransportError as exc:
            raise ApiError(
                f"cannot reach the saga API at {self.url} ({exc or type(exc).__name__}); "
                "is it running? (set --url or SAGA_URL)"
            ) from None
        if response.status_code >= 400:
            raise ApiError(self._describe_error(method, path, response))
        if not response.content:
            return response.status_code, None
        try:
            return response.status_code, response.json()
        except ValueError:
            raise ApiError(
                f"{method} {url}: expected JSON, got {response.headers.get('content-type')}: "
                f"{response.text[:200]!r}"
            ) from None

    def _describe_error(self, method: str, path: str, response: Any) -> str:
        lines = [f"{method} {self.url}{path} answered {response.status_code}"]
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            status = data.get("status") or response.reason_phrase
            message = data.get("message")
            lines[0] += f" {status}" + (f": {message}" if message else "")
            lines += [f"  {where}: {what}" for where, what in _flatten_errors(data.get("errors"))]
        else:
            lines[0] += f" {response.reason_phrase}"
            text = response.text.strip()
            if text:
                lines.append("  " + text[:300])
        if response.status_code == 401:
            lines.append(
                "  (send an API key with --api-key or SAGA_API_KEY)"
                if not self.api_key
                else "  (the API key was refused: check --api-key or SAGA_API_KEY)"
            )
        return "\n".join(lines)


def _flatten_errors(errors: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """marshmallow's nested error dicts as `json.payload.email: Missing data ...` lines."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            yield from _flatten_errors(value, f"{where}.{key}" if where else str(key))
    elif isinstance(errors, list) and all(isinstance(e, str) for e in errors):
        yield where or "error", " ".join(errors)
    elif isinstance(errors, list):
        for index, value in enumerate(errors):
            yield from _flatten_errors(value, f"{where}[{index}]")
    elif errors not in (None, "", {}):
        yield where or "error", str(errors)


def client_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--json", "as_json", is_flag=True, help="Print the API's JSON instead of tables."
    )(f)
    f = click.option(
        "--api-key",
        envvar="SAGA_API_KEY",
        show_envvar=True,
        help="API key (sent as X-API-Key).",
    )(f)
    f = click.option(
        "--url",
        envvar="SAGA_URL",
        show_envvar=True,
        default=DEFAULT_URL,
        show_default=True,
        help="Base URL of the saga API.",
    )(f)
    return f


def _path(*parts: str) -> str:
    return "".join("/" + quote(p, safe="") for p in parts)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped or logged: let tables take their natural width instead of wrapping at 80.
        console = Console(highlight=False, width=max(console.width, 160))
    return console


def _json_object(text: str, what: str, param_hint: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{what} is not valid JSON: {exc}", param_hint=param_hint
        ) from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{what} must be a JSON object", param_hint=param_hint)
    return value


@main.command()
@click.argument("workflow", required=False)
@click.option(
    "--payload", metavar="JSON", help="The workflow's payload, a JSON object (default {})."
)
@click.option(
    "--definition",
    type=click.File("r"),
    metavar="FILE",
    help="Start a saga from a definition (JSON file, - for stdin): POST /saga/start.",
)
@click.option("--correlation-id", help="Correlation id carried to every step.")
@click.option(
    "--idempotency-key",
    help="Idempotency-Key header: repeating the same key returns the saga it created.",
)
@client_options
def start(
    workflow: str | None,
    payload: str | None,
    definition: Any,
    correlation_id: str | None,
    idempotency_key: str | None,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Start a saga: a predefined WORKFLOW, or a definition with --definition.

    \b
    saga-orchestrator start user_registration --payload '{"email": "ada@example.com"}'
    saga-orchestrator start --definition saga.json
    """
    if (workflow is None) == (definition is None):
        raise click.UsageError("give either a WORKFLOW name or --definition FILE (not both)")
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    if definition is not None:
        body = _json_object(definition.read(), f"the definition {definition.name}", "--definition")
        path = "/saga/start"
        if payload is not None:
            body["payload"] = _json_object(payload, "the payload", "--payload")
    else:
        body = {"payload": _json_object(payload or "{}", "the payload", "--payload")}
        path = "/workflows" + _path(str(workflow)) + "/start"
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    code, saga = Api(url, api_key).call("POST", path, body=body, headers=headers)
    if as_json:
        _print_json(saga)
        return
    console = _console()
    if code == 200:
        console.print("An existing saga was returned for this Idempotency-Key.")
    console.print(_saga_view(saga))
    console.print(f"Watch it: saga-orchestrator status {saga.get('saga_id')} --watch")


@main.command()
@click.argument("saga_id")
@click.option(
    "--watch", is_flag=True, help="Redraw until COMPLETED, COMPENSATED or COMPENSATION_FAILED."
)
@click.option(
    "--interval", type=float, default=0.5, show_default=True, help="Seconds between polls."
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="With --watch: give up (exit code 1) after this many seconds.",
)
@client_options
def status(
    saga_id: str,
    watch: bool,
    interval: float,
    timeout: float | None,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Show a saga and its steps (GET /saga/{id}/status).

    With --watch the view is redrawn until the saga reaches a final status; with --json too,
    a JSON line is printed at every change. The exit code is 0 whatever the final status.
    """
    client = Api(url, api_key)
    path = "/saga" + _path(saga_id) + "/status"

    def fetch() -> dict[str, Any]:
        return dict(client.call("GET", path)[1])

    saga = fetch()
    if not watch:
        if as_json:
            _print_json(saga)
        else:
            _console().print(_saga_view(saga))
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        if as_json:
            _watch_json(saga, fetch, interval, deadline)
        else:
            _watch_live(saga, fetch, interval, deadline)
    except KeyboardInterrupt:
        click.echo("Stopped watching; the saga goes on.", err=True)
        sys.exit(130)


def _watch_json(
    saga: dict[str, Any], fetch: Callable[[], dict[str, Any]], interval: float, deadline: Any
) -> None:
    click.echo(json.dumps(saga, ensure_ascii=False))
    while saga.get("status") not in FINAL_STATUSES:
        _sleep_or_give_up(interval, deadline, saga)
        latest = fetch()
        if latest != saga:
            click.echo(json.dumps(latest, ensure_ascii=False))
        saga = latest


def _watch_live(
    saga: dict[str, Any], fetch: Callable[[], dict[str, Any]], interval: float, deadline: Any
) -> None:
    from rich.live import Live

    console = _console()
    if not console.is_terminal:  # nothing to redraw on: show the final state once
        while saga.get("status") not in FINAL_STATUSES:
            _sleep_or_give_up(interval, deadline, saga)
            saga = fetch()
        console.print(_saga_view(saga))
        return
    with Live(_saga_view(saga), console=console, auto_refresh=False) as live:
        while saga.get("status") not in FINAL_STATUSES:
            _sleep_or_give_up(interval, deadline, saga)
            saga = fetch()
            live.update(_saga_view(saga), refresh=True)


def _sleep_or_give_up(interval: float, deadline: float | None, saga: dict[str, Any]) -> None:
    if deadline is not None and time.monotonic() + interval > deadline:
        raise ApiError(f"saga {saga.get('saga_id')} is still {saga.get('status')}: gave up")
    time.sleep(interval)


@main.command("list")
@click.option("--status", "status_", metavar="STATUS", help="e.g. RUNNING, COMPENSATION_FAILED.")
@click.option("--type", "saga_type", help="Saga type (workflow name).")
@click.option("--correlation-id")
@click.option("--created-after", metavar="ISO-8601")
@click.option("--created-before", metavar="ISO-8601")
@click.option("--page", type=click.IntRange(min=1), default=None, help="Page number (from 1).")
@click.option("--page-size", type=click.IntRange(min=1), default=None, help="At most 500.")
@client_options
def list_sagas(
    status_: str | None,
    saga_type: str | None,
    correlation_id: str | None,
    created_after: str | None,
    created_before: str | None,
    page: int | None,
    page_size: int | None,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """List sagas, newest first (GET /saga); the filters combine with AND."""
    params = {
        "status": status_,
        "saga_type": saga_type,
        "correlation_id": correlation_id,
        "created_after": created_after,
        "created_before": created_before,
        "page": page,
        "page_size": page_size,
    }
    _, data = Api(url, api_key).call("GET", "/saga", params=params)
    if as_json:
        _print_json(data)
        return
    from rich.table import Table

    items = data.get("items", [])
    table = Table(box=None)
    table.add_column("saga_id", no_wrap=True)
    table.add_column("type")
    table.add_column("status", no_wrap=True)
    table.add_column("current step")
    table.add_column("created", no_wrap=True)
    table.add_column("correlation_id")
    for saga in items:
        table.add_row(
            str(saga.get("saga_id")),
            str(saga.get("saga_type")),
            _styled(saga.get("status")),
            saga.get("current_step") or "",
            _time(saga.get("created_at")),
            saga.get("correlation_id") or "",
        )
    console = _console()
    console.print(table)
    console.print(
        f"{len(items)} of {data.get('total', len(items))} "
        f"(page {data.get('page', 1)}, page size {data.get('page_size', '?')})"
    )


@main.command()
@click.argument("saga_id")
@click.option("--reason", help="Why: stored with the saga's failure record.")
@client_options
def compensate(
    saga_id: str, reason: str | None, url: str, api_key: str | None, as_json: bool
) -> None:
    """Undo a saga (POST /saga/{id}/compensate): cancel it if PENDING, compensate it if
    RUNNING or COMPLETED, retry the compensation if COMPENSATION_FAILED."""
    body = {"reason": reason} if reason else {}
    path = "/saga" + _path(saga_id) + "/compensate"
    _, saga = Api(url, api_key).call("POST", path, body=body)
    if as_json:
        _print_json(saga)
        return
    console = _console()
    console.print(_saga_view(saga))
    console.print(f"Watch it: saga-orchestrator status {saga.get('saga_id')} --watch")


# --- rendering -------------------------------------------------------------------------------


def _styled(status: Any) -> str:
    text = str(status or "")
    style = STATUS_STYLES.get(text)
    return f"[{style}]{text}[/]" if style else text


def _compensation(comp: Mapping[str, Any] | None) -> str:
    if not comp:
        return "-"  # nothing to undo
    if comp.get("status") == "PENDING":
        return "[dim]not run[/]"  # only runs if the saga compensates
    return _styled(comp.get("status"))


def _time(value: Any, clock_only: bool = False) -> str:
    """`2025-01-02T03:04:05.678Z` -> `2025-01-02 03:04:05` (or `03:04:05`): enough to read."""
    if not value:
        return ""
    text = str(value).replace("T", " ")[:19]
    return text[11:] if clock_only and len(text) == 19 else text


def _saga_view(saga: Mapping[str, Any]) -> Any:
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column()
    head.add_row("saga", escape(f"{saga.get('saga_id')}  ({saga.get('saga_type')})"))
    head.add_row("status", _styled(saga.get("status")))
    rows = (
        ("correlation", "correlation_id"),
        ("current step", "current_step"),
        ("created", "created_at"),
        ("finished", "finished_at"),
    )
    for label, key in rows:
        if saga.get(key):
            value = saga[key]
            head.add_row(label, _time(value) if key.endswith("_at") else escape(str(value)))
    if not saga.get("finished_at") and saga.get("deadline_at"):
        head.add_row("deadline", _time(saga["deadline_at"]))
    failure = saga.get("failure")
    if isinstance(failure, Mapping):
        where = f" at step {failure['step']}" if failure.get("step") else ""
        head.add_row(
            "failure",
            "[red]" + escape(f"{failure.get('reason')}{where}: {failure.get('message')}") + "[/]",
        )

    steps = Table("#", "step", "status", "attempts", "compensation", "started", "finished")
    steps.add_column("error", overflow="fold")
    for number, step in enumerate(saga.get("steps") or [], start=1):
        comp = step.get("compensation")
        error = step.get("error") or (comp.get("error") if comp else None) or ""
        steps.add_row(
            str(number),
            escape(str(step.get("name"))),
            _styled(step.get("status")),
            str(step.get("attempts", "")),
            _compensation(comp),
            _time(step.get("started_at"), clock_only=True),
            _time(step.get("finished_at"), clock_only=True),
            escape(str(error)[:200]),
        )
    return Group(head, steps)


if __name__ == "__main__":
    sys.exit(main())
