"""The dashboard's pages and forms (see `app/ui/__init__.py`)."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect
from redis.exceptions import RedisError

from app import jsonbody
from app.auth import OPERATOR, Principal, identify, identify_fingerprint, key_fingerprint
from app.schemas import STATUSES
from app.ui import present
from sagas import overview as glimpse
from sagas.engine import SagaEngine
from sagas.errors import InvalidTransition, SagaNotFound, UnknownStep, ValidationFailed
from sagas.model import SagaRecord
from sagas.repair import MAX_REASON, allowed
from sagas.store import ListQuery

log = logging.getLogger("app.ui")
csrf = CSRFProtect()
blp = Blueprint(
    "ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static"
)

# Scripts and styles only from /ui/static (htmx's own inline style is switched off in
# base.html), no inline script or style attribute, no framing, forms post here only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
OPEN_ENDPOINTS = ("ui.static", "ui.login", "ui.logout")
PAGE_SIZES = (25, 50, 100, 200, 500)
SAGA_ACTIONS = ("compensate", "cancel", "rerun")
STEP_ACTIONS = ("resolve", "skip", "retry")
NEEDS_A_PERSON = 20  # COMPENSATION_FAILED sagas listed on the overview (newest first)
OLDEST = 10  # oldest RUNNING / COMPENSATING sagas listed
POLL_SECONDS = {"overview": 5, "list": 5, "saga": 2}


def engine() -> SagaEngine:
    return current_app.extensions["saga_engine"]  # type: ignore[no-any-return]


# --- who is there -------------------------------------------------------------------------
def signed_in() -> Principal | None:
    """The principal of this session: its key's fingerprint, checked against the keys now
    configured, within the session's lifetime since login. With no keys and anonymous
    access on (local development), the anonymous admin without logging in."""
    fingerprint = session.get("fp")
    if not isinstance(fingerprint, str):
        return identify(None)
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    if time.time() - float(session.get("at", 0)) > lifetime:
        return None
    return identify_fingerprint(fingerprint)


@blp.before_request
def gate() -> ResponseReturnValue | None:
    """Every /ui request but the static files and the login form needs a session; every
    POST needs the form's CSRF token (checked after the session, so that an expired session
    leads to the login form rather than to a CSRF error)."""
    if request.endpoint == "ui.static":
        return None
    if request.endpoint not in OPEN_ENDPOINTS:
        who = signed_in()
        if who is None:
            session.clear()
            return to_login()
        g.ui_principal = who
    if request.method == "POST":
        csrf.protect()
    return None


def to_login() -> ResponseReturnValue:
    target = url_for("ui.login", next=request.full_path.rstrip("?"))
    if request.headers.get("HX-Request"):  # a live refresh: send the whole page there
        return "", 401, {"HX-Redirect": target}
    return redirect(target)


@blp.after_request
def headers(response: Any) -> Any:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "ui.static":
        response.headers["Cache-Control"] = "no-store"  # saga data stays out of caches
    return response


@blp.context_processor
def helpers() -> dict[str, Any]:
    who: Principal | None = g.get("ui_principal")
    return {
        "who": who,
        "may_act": who is not None and who.may(OPERATOR),
        "pretty": present.pretty,
        "evidence": present.evidence,
        "is_fold": lambda item: isinstance(item, present.Fold),
        "when": present.when,
        "ago": present.ago,
        "duration": present.duration,
        "statuses": STATUSES,
        "final_statuses": present.FINAL,
        "max_reason": MAX_REASON,
        "poll": POLL_SECONDS,
    }


@blp.errorhandler(CSRFError)
def csrf_refused(exc: CSRFError) -> ResponseReturnValue:
    message = (
        f"The form was refused: {exc.description} Reload the page and send it again "
        "(forms expire with the session, and only this dashboard's own forms are accepted)."
    )
    return render_template("error.html", title="Form refused", message=message), 400


@blp.errorhandler(RedisError)
def store_down(exc: RedisError) -> ResponseReturnValue:
    log.error("dashboard: state store error: %s", exc)
    message = f"The state store (Redis) could not be read: {exc}. Try again shortly."
    return render_template("error.html", title="State store unavailable", message=message), 503


# --- logging in and out -------------------------------------------------------------------
@blp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        if signed_in() is not None:
            return redirect(target)
        return render_template("login.html", next=target, error=None)
    presented = request.form.get("key", "")
    who = identify(presented) if presented else None
    if who is None:
        log.warning("dashboard: login refused (wrong key) from %s", request.remote_addr)
        error = "That key is not valid. Paste an API key from SAGA_API_KEYS."
        return render_template("login.html", next=target, error=error), 401
    session.clear()  # nothing from before the login carries over
    session.permanent = True
    session["fp"] = key_fingerprint(presented)
    session["at"] = time.time()
    log.info("dashboard: %s (%s) logged in", who.name, who.role)
    return redirect(target)


@blp.post("/logout")
def logout() -> ResponseReturnValue:
    who = signed_in()
    session.clear()
    if who is not None:
        log.info("dashboard: %s logged out", who.name)
    flash("You are logged out.", "info")
    return redirect(url_for("ui.login"))


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a dashboard path of this site only."""
    default = url_for("ui.overview_page")
    if not value or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not (parts.path == "/ui" or parts.path.startswith("/ui/")):
        return default
    if parts.path in (url_for("ui.login"), url_for("ui.logout")):
        return default
    return value


# --- overview -------------------------------------------------------------------------------
@blp.get("/")
def overview_page() -> ResponseReturnValue:
    return render_template("overview.html", **overview_data())


@blp.get("/overview/live")
def overview_live() -> ResponseReturnValue:
    """The overview's live part (htmx), or the page itself."""
    if not request.headers.get("HX-Request"):
        return redirect(url_for("ui.overview_page"))
    return render_template("_overview.html", **overview_data())


def overview_data() -> dict[str, Any]:
    e = engine()
    store = e.store
    counts = e.counts()
    total, needing = e.find(ListQuery(status="COMPENSATION_FAILED", page_size=NEEDS_A_PERSON))
    minutes = glimpse.created_per_minute(store, 30)
    health, health_status = current_health()
    return {
        "counts": counts,
        "by_type": glimpse.counts_by_type(store),
        "needing": needing,
        "needing_total": total,
        "oldest_running": glimpse.oldest(store, "RUNNING", OLDEST),
        "oldest_compensating": glimpse.oldest(store, "COMPENSATING", OLDEST),
        "pending": counts.get("PENDING", 0),
        "oldest_pending": glimpse.oldest(store, "PENDING", 1),
        "minutes": minutes,
        "minutes_max": max((m.created for m in minutes), default=0),
        "health": health,
        "health_status": health_status,
        "stats": e.stats(),
    }


def current_health() -> tuple[dict[str, Any], int]:
    """The deployment's health, as `GET /health/` reports it."""
    from app.blueprints.health import current_health as health

    try:
        return health()
    except RedisError as exc:
        return {"status": "unhealthy", "redis": f"unreachable: {exc}"}, 503


# --- the list --------------------------------------------------------------------------------
@blp.get("/sagas")
def sagas_page() -> ResponseReturnValue:
    return render_template("list.html", **listing())


@blp.get("/sagas/rows")
def sagas_rows() -> ResponseReturnValue:
    """The list's live part (htmx), or the page itself."""
    if not request.headers.get("HX-Request"):
        return redirect(url_for("ui.sagas_page", **request.args))
    return render_template("_rows.html", **listing())


def listing() -> dict[str, Any]:
    """Filters and page from the query string (the filters of `GET /saga`), and the page of
    sagas from the same indexes the API reads (`engine.find`: never a scan)."""
    filters, errors = {}, []
    raw = {name: request.args.get(name, "").strip() for name in LIST_FILTERS}
    for name in LIST_FILTERS:
        if raw[name]:
            filters[name] = raw[name]
    query_args: dict[str, Any] = {}
    status = filters.get("status")
    if status is not None and status not in STATUSES:
        errors.append(f"status: must be one of {', '.join(STATUSES)}")
    query_args["status"] = status
    for name, longest in (("saga_type", 100), ("correlation_id", 200)):
        if len(filters.get(name, "")) > longest:
            errors.append(f"{name}: at most {longest} characters")
        query_args[name] = filters.get(name)
    for name in ("created_after", "created_before"):
        value = filters.get(name)
        query_args[name] = None
        if value is not None:
            try:
                query_args[name] = epoch_ms(value)
            except ValueError:
                errors.append(f"{name}: not a date and time (YYYY-MM-DDTHH:MM, UTC)")
    after, before = query_args["created_after"], query_args["created_before"]
    if after is not None and before is not None and after >= before:
        errors.append("created_after: must be before created_before")
    page = bounded_int(request.args.get("page"), 1, 1, 1_000_000)
    page_size = bounded_int(request.args.get("page_size"), 50, 1, 500)
    total, items = 0, []
    if not errors:
        total, items = engine().find(ListQuery(**query_args, page=page, page_size=page_size))
    paging = present.Paging(page, page_size, total)
    return {
        "filters": filters,
        "errors": errors,
        "items": items,
        "paging": paging,
        "page_sizes": PAGE_SIZES,
        "saga_types": glimpse.saga_types(engine().store),
        "exact": not (filters.get("correlation_id") and (status or filters.get("saga_type"))),
        "page_url": lambda p: url_for("ui.sagas_page", **filters, page=p, page_size=page_size),
        "rows_url": url_for("ui.sagas_rows", **filters, page=page, page_size=page_size),
    }


LIST_FILTERS = ("status", "saga_type", "correlation_id", "created_after", "created_before")


def epoch_ms(value: str) -> int:
    """Epoch ms of an ISO-8601 date and time; one without a zone (a datetime-local field)
    is UTC."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def bounded_int(raw: str | None, default: int, lowest: int, highest: int) -> int:
    if raw is None or not raw.strip().isdigit():
        return default
    return min(max(int(raw), lowest), highest)


# --- one saga --------------------------------------------------------------------------------
@blp.get("/sagas/<saga_id>")
def saga_page(saga_id: str) -> ResponseReturnValue:
    return render_saga(saga_id)


@blp.get("/sagas/<saga_id>/live")
def saga_live(saga_id: str) -> ResponseReturnValue:
    """The saga page's live part (htmx): 204 (nothing to swap) while the saga's version is
    the one the page shows, so that forms being filled in are left alone."""
    if not request.headers.get("HX-Request"):
        return redirect(url_for("ui.saga_page", saga_id=saga_id))
    try:
        record = engine().get(saga_id)
    except SagaNotFound:
        return "", 286  # htmx stops polling on 286: the saga is gone (deleted, expired)
    if str(record["version"]) == request.args.get("v"):
        return "", 204
    return render_template("_saga_live.html", **saga_context(record))


def render_saga(
    saga_id: str, error: str | None = None, status: int = 200, form: dict[str, str] | None = None
) -> ResponseReturnValue:
    try:
        record = engine().get(saga_id)
    except SagaNotFound:
        message = f"No saga {saga_id!r}: it never existed, was deleted, or expired after retention."
        return render_template("error.html", title="No such saga", message=message), 404
    context = saga_context(record)
    context.update(error=error, form=form or {}, definition=definition_of(saga_id))
    return render_template("saga.html", **context), status


def saga_context(record: SagaRecord) -> dict[str, Any]:
    actions = allowed(record)
    return {
        "saga": record,
        "glance": present.glance(record),
        "saga_actions": [a for a in actions if a.step is None],
        "step_actions": {
            number: [a for a in actions if a.step_number == number]
            for number in range(1, len(record["steps"]) + 1)
        },
        "history": present.fold_history(engine().history(record["saga_id"])),
        "live": record["status"] not in present.FINAL,
        "payload_json": json.dumps(record["payload"], indent=2, ensure_ascii=False),
    }


def definition_of(saga_id: str) -> list[dict[str, Any]] | None:
    try:
        return engine().store.definition_of(saga_id)
    except (SagaNotFound, KeyError):
        return None


@blp.post("/sagas/<saga_id>/<any(compensate, cancel, rerun):action>")
@blp.post("/sagas/<saga_id>/steps/<int:number>/<any(resolve, skip, retry):action>")
def act(saga_id: str, action: str, number: int | None = None) -> ResponseReturnValue:
    """One repair action, as the operator's key: redirect to the saga (a rerun: to the new
    saga) with a message, or the page again with the engine's refusal."""
    who: Principal = g.ui_principal
    # What was sent, to fill the form in again when it is refused (`key`: the field's id).
    form = {
        "key": f"reason-{number}-{action}" if number else f"reason-{action}",
        "reason": request.form.get("reason", ""),
        "payload": request.form.get("payload", ""),
    }
    if not who.may(OPERATOR):
        log.warning("dashboard: %s (%s) may not %s %s", who.name, who.role, action, saga_id)
        error = (
            f"Your key {who.name!r} has the role {who.role!r}: it may look, not act. "
            "Repair actions need an operator or admin key."
        )
        return render_saga(saga_id, error, 403)
    reason = request.form.get("reason", "")
    repairs = engine().repairs
    try:
        if action == "compensate":
            repairs.compensate(saga_id, reason, who.name)
            done = "Compensation requested."
        elif action == "cancel":
            repairs.cancel(saga_id, reason, who.name)
            done = "Cancelled: the saga never started."
        elif action == "rerun":
            new = repairs.rerun(saga_id, reason, who.name, rerun_payload())
            flash(f"Rerun started as a new saga (this one reruns {saga_id}).", "ok")
            return redirect(url_for("ui.saga_page", saga_id=new["saga_id"]), 303)
        else:
            step = number or 0
            record = getattr(repairs, action)(saga_id, step, reason, who.name)
            name = record["steps"][step - 1]["name"]
            done = {
                "resolve": f"The compensation of {name!r} counts as done by hand.",
                "skip": f"The compensation of {name!r} was skipped: its effect stands.",
                "retry": f"The next attempt of {name!r} was sent now.",
            }[action]
    except InvalidTransition as exc:
        return render_saga(saga_id, f"Refused: {exc.message}", 409, form)
    except ValidationFailed as exc:
        return render_saga(saga_id, f"Invalid {exc.field}: {exc.message}", 422, form)
    except UnknownStep as exc:
        return render_saga(saga_id, str(exc), 404, form)
    except SagaNotFound:
        return render_saga(saga_id)
    flash(done, "ok")
    return redirect(url_for("ui.saga_page", saga_id=saga_id), 303)


def rerun_payload() -> dict[str, Any] | None:
    """The rerun form's payload: None (the original's) when left empty; raises
    ValidationFailed naming `payload` when it is not a JSON object we accept."""
    raw = request.form.get("payload", "").strip()
    if not raw:
        return None
    try:
        value = jsonbody.parse(raw.encode("utf-8"))
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            "payload", f"not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        ) from None
    except (jsonbody.TooDeep, UnicodeError) as exc:
        raise ValidationFailed("payload", f"not valid JSON ({exc})") from None
    except jsonbody.BodyRefused as exc:
        field = "payload" if exc.field == "$" else f"payload.{exc.field}"
        raise ValidationFailed(field, exc.message) from None
    if not isinstance(value, dict):
        raise ValidationFailed("payload", "must be a JSON object ({...})")
    return value
