"""In-memory HTTP services playing `auth`, `airtable` and `notification` for the workflows.

They serve exactly the calls of the five predefined workflows (`sagas/templates.py`):

auth (platform service: users, workspaces, permissions, quotas)
  POST   /users                                         create a user (409: email taken)
  DELETE /users/<user_id>                               (409 while the user owns workspaces)
  POST   /users/<user_id>/workspaces                    create a workspace owned by the user
  DELETE /workspaces/<workspace_id>                     (409 while permissions are granted)
  POST   /workspaces/<workspace_id>/permissions         grant owner + members, one grant set
  DELETE /workspaces/<workspace_id>/permissions/<id>    revoke that grant set
  POST   /workspaces/<workspace_id>/quota-reservations  reserve units (409: quota exceeded)
  DELETE /workspaces/<workspace_id>/quota-reservations/<id>

airtable (Airtable gateway: bases, tables, records, exports, batches, webhooks)
  POST   /bases/<base_id>/links                         link a base to a workspace
  DELETE /bases/<base_id>/links/<link_id>
  POST   /bases/<base_id>/tables/<table>/exports        snapshot of records (with fields)
  DELETE /bases/<base_id>/exports/<export_id>
  POST   /bases/<base_id>/tables/<table>/batches        update records, keeping before-images
  POST   /bases/<base_id>/batches/<batch_id>/revert     restore them, forget the batch
  POST   /bases/<base_id>/tables/<table>/records        create a record
  DELETE /bases/<base_id>/tables/<table>/records/<record_id>
  POST   /webhooks/<webhook_id>/deliveries              validate and record a delivery
  DELETE /webhooks/<webhook_id>/deliveries/<delivery_id>

notification (automation services: notifications, transformations, AI jobs)
  POST   /notifications                                 send (nothing to undo)
  POST   /transformations                               transform records' string fields
  DELETE /transformations/<transformation_id>
  POST   /ai/jobs                                       run an analysis job (synchronously)
  DELETE /ai/jobs/<job_id>                              discard the job and its result

Every service answers JSON; unknown ids get 404, invalid bodies 422. A request whose JSON
body has `"demo_fail": true` gets 422 `{"error": "demo failure requested"}` and changes
nothing. Each request is logged on one line: service, method, path, status and
`X-Correlation-Id`.

The saga barrier (`participant`, docs/reliability.md "The participant's side: the barrier"):
every service puts its requests and commands behind a barrier keyed by the orchestrator's
`Idempotency-Key: <saga_id>:<step>:<action|compensation>`, kept in a
`participant.memory.MemoryBarrier` under the service's own lock: the state is in memory,
so its barrier is too, and both live and die together (a barrier in Redis would outlive a
restart of the demo and replay answers about objects that no longer exist).
- A repeated key gets the first answer again (same status and body) without acting twice.
- A compensation whose action this service never applied answers 200
  `{"barrier": "null_compensation", ...}` and does nothing.
- An action arriving after its compensation (a late call the orchestrator gave up on)
  answers 409 `{"error": ..., "barrier": "cancelled"}` and creates nothing.
- An answer with status 400 or more is not remembered (it had no effect): a later
  compensation of its key is a null one.
- A request without the header acts each time; a header that is not such a key gets 400.

Choreography: given a Redis URL, the notification service also consumes the commands
stream `<prefix>stream:commands` in its own consumer group `demo-automation` (created at id
0). For `ai.analysis_requested` it creates the AI job exactly as `POST /ai/jobs` would (so
`DELETE /ai/jobs/<job_id>` undoes it) and appends the reply to `<prefix>stream:events`:
`ai.analysis_completed` with the job as data, or `ai.analysis_failed` with
`{"error": ...}` (for `"demo_fail": true` in the command's data, or invalid data). The
reply carries the command's saga_id, step and correlation_id (the orchestrator matches a
reply to the step that issued the command). The command's idempotency_key
(`<saga_id>:<step>:action`) goes through the same barrier as the HTTP calls: a repeated key
acts once and republishes the first reply; a command arriving after the step's
compensation (`DELETE /ai/jobs/...` with `<saga_id>:<step>:compensation`) creates no job
and replies `ai.analysis_failed`; a malformed key gets `ai.analysis_failed` too. A command
is acknowledged only once its reply is written; other command types are acknowledged and
ignored. One log line per command.

Each service starts with demo data (`seed`), so the workflows can be tried at once:
auth user `usr_demo` with workspace `ws_demo`; Airtable base `appDemoBase` with tables
`Contacts` (three records) and `AI Results`, and webhook `whDemo` on `Contacts`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from participant import BarrierKey, Decision, InvalidKey, Outcome
from participant.memory import MemoryBarrier

KINDS = ("auth", "airtable", "notification")
DEFAULT_PORTS: dict[str, int] = {"auth": 8101, "airtable": 8102, "notification": 8103}
ENV_VARS = {
    "auth": "AUTH_SERVICE_URL",
    "airtable": "AIRTABLE_CONNECTOR_URL",
    "notification": "NOTIFICATION_SERVICE_URL",
}
DEMO_FAILURE = "demo failure requested"
MAX_BARRIER_BRANCHES = 100_000  # (saga, step) pairs a service remembers; the oldest go first
REPLAYED = "idempotent replay"  # the notes of a log line, by what the barrier did
NULL_COMPENSATION = "null compensation"
CANCELLED = "cancelled: the step was compensated before"
COMMAND_BLOCK_MS = 1000  # how long one XREADGROUP waits for commands (and stop() at most)

log = logging.getLogger("demo.services")

JSON = dict[str, Any]
Answer = tuple[int, JSON]
_App = TypeVar("_App", bound="DemoApp")


class ServiceError(Exception):
    """Ends a request with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Unrecorded(Exception):
    """Carries an answer out of the barrier without recording it (an error: no effect)."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:14]}"


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ServiceError(422, f"{key} is required (a non-empty string)")
    return value


def _choice(body: Mapping[str, Any], key: str, allowed: Iterable[str], default: str) -> str:
    value = body.get(key, default)
    options = sorted(allowed)
    if value not in options:
        raise ServiceError(422, f"{key} must be one of {', '.join(options)}")
    return str(value)


def _int(body: Mapping[str, Any], key: str, minimum: int, maximum: int) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ServiceError(422, f"{key} must be an integer from {minimum} to {maximum}")
    return value


def _strings(body: Mapping[str, Any], key: str, allowed: Iterable[str] | None = None) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ServiceError(422, f"{key} must be a list of non-empty strings")
    if allowed is not None:
        options = set(allowed)
        unknown = [v for v in value if v not in options]
        if unknown:
            raise ServiceError(422, f"{key}: unknown values {unknown}")
    return list(value)


def _record_updates(body: Mapping[str, Any], key: str) -> list[JSON]:
    value = body.get(key)
    if not isinstance(value, list) or not all(
        isinstance(item, dict)
        and isinstance(item.get("id"), str)
        and isinstance(item.get("fields"), dict)
        for item in value
    ):
        raise ServiceError(422, f"{key} must be a list of {{id, fields}} objects")
    return [{"id": item["id"], "fields": dict(item["fields"])} for item in value]


def _get(items: Mapping[str, JSON], item_id: str, what: str) -> JSON:
    item = items.get(item_id)
    if item is None:
        raise ServiceError(404, f"{what} {item_id!r} not found")
    return item


def _note(outcome: Outcome) -> str:
    return REPLAYED if outcome.replayed else ""


def _cancelled(outcome: Outcome) -> JSON:
    assert outcome.key is not None
    return {
        "error": f"step {outcome.key.step!r} of saga {outcome.key.saga_id} was compensated "
        "before this action arrived: it was not applied",
        "barrier": "cancelled",
    }


def _null_compensation(outcome: Outcome) -> JSON:
    assert outcome.key is not None
    return {
        "barrier": "null_compensation",
        "detail": f"no action of step {outcome.key.step!r} of saga {outcome.key.saga_id} "
        "was applied here: nothing to undo",
    }


class DemoApp:
    """A WSGI app with routing, the saga barrier, `demo_fail` and one log line per request.

    Subclasses list their routes in `ROUTES` as (method, rule, handler method name); a
    handler takes the JSON body and the path arguments and returns (status, JSON). It must
    validate before it changes anything: an error leaves no trace (memory has no rollback).
    """

    KIND = ""
    ROUTES: tuple[tuple[str, str, str], ...] = ()
    # Commands of `<prefix>stream:commands` this service acts on: command type ->
    # (handler method name, success event type, failure event type). A handler takes the
    # command's data like a route's handler takes its JSON body.
    COMMANDS: dict[str, tuple[str, str, str]] = {}
    COMMAND_GROUP = ""  # the service's consumer group on the commands stream

    def __init__(self, seed: bool = True) -> None:
        self.lock = threading.RLock()  # one request at a time: the state is plain dicts
        # The barrier shares the lock: a request's decision, effect and record are one step.
        self.barrier = MemoryBarrier(lock=self.lock, max_records=MAX_BARRIER_BRANCHES)
        self._url_map = Map(
            [Rule(path, methods=[method], endpoint=name) for method, path, name in self.ROUTES]
        )
        self.requests = 0
        if seed:
            with self.lock:
                self.seed()

    def seed(self) -> None:
        """Load the demo data (called once, by the constructor)."""

    def snapshot(self) -> JSON:
        """A deep copy of everything the service holds (no barrier records)."""
        raise NotImplementedError

    def state(self) -> JSON:
        """`snapshot()` taken under the service's lock."""
        with self.lock:
            return copy.deepcopy(self.snapshot())

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        status, answer, note = self.handle(request)
        log.info(
            "%s %s %s -> %d correlation_id=%s%s",
            self.KIND,
            request.method,
            request.full_path.rstrip("?"),
            status,
            request.headers.get("X-Correlation-Id", "-"),
            f" ({note})" if note else "",
            extra={
                "service": self.KIND,
                "method": request.method,
                "path": request.full_path.rstrip("?"),
                "status": status,
                "correlation_id": request.headers.get("X-Correlation-Id"),
                "saga_id": request.headers.get("X-Saga-Id"),
                "step": _step_of(request.headers.get("Idempotency-Key")),
                "trace_id": _trace_of(request.headers.get("traceparent")),
                "barrier": note or None,
            },
        )
        response = Response(json.dumps(answer), status=status, mimetype="application/json")
        return response(environ, start_response)

    def handle(self, request: Request) -> tuple[int, JSON, str]:
        """Answer one request: (status, JSON body, note). The note says what the barrier
        did instead of acting ("" when the request acted, or had no key)."""
        raw = request.headers.get("Idempotency-Key", "").strip()
        with self.lock:
            self.requests += 1
            if not raw:
                status, answer = self._dispatch(request)
                return status, answer, ""
            try:
                key = BarrierKey.parse(raw)
            except InvalidKey as exc:
                return 400, {"error": f"Idempotency-Key: {exc}"}, ""

            def act() -> JSON:
                status, answer = self._dispatch(request)
                if status >= 400:
                    raise _Unrecorded((status, answer))
                return {"status": status, "body": answer}

            try:
                outcome = self.barrier.run(key, act)
            except _Unrecorded as refused:
                status, answer = refused.answer
                return status, answer, ""
            if outcome.decision is Decision.CANCELLED:
                return 409, _cancelled(outcome), CANCELLED
            if outcome.decision is Decision.NULL_COMPENSATION:
                return 200, _null_compensation(outcome), NULL_COMPENSATION
            stored = outcome.value
            return int(stored["status"]), dict(stored["body"]), _note(outcome)

    def command(self, command_type: str, data: Any, key: str) -> tuple[str, JSON, str] | None:
        """Act on one command of the commands stream: (reply event type, reply data, note),
        the note saying what the barrier did instead of acting ("" if it acted); None for
        a type this service does not handle."""
        spec = self.COMMANDS.get(command_type)
        if spec is None:
            return None
        handler, success, failure = spec

        def act() -> JSON:
            if not isinstance(data, dict):
                raise _Unrecorded({"error": "the command's data must be a JSON object"})
            if data.get("demo_fail") is True:
                raise _Unrecorded({"error": DEMO_FAILURE})
            try:
                _status, created = getattr(self, handler)(data)
            except ServiceError as exc:
                raise _Unrecorded({"error": exc.message}) from None
            return dict(created)

        with self.lock:
            try:
                if not key:
                    return success, act(), ""
                outcome = self.barrier.run(BarrierKey.parse(key), act)
            except InvalidKey as exc:
                return failure, {"error": f"idempotency_key: {exc}"}, ""
            except _Unrecorded as refused:
                return failure, dict(refused.answer), ""
            if outcome.decision is Decision.CANCELLED:
                return failure, _cancelled(outcome), CANCELLED
            if outcome.decision is Decision.NULL_COMPENSATION:  # not for an action's key
                return failure, _null_compensation(outcome), NULL_COMPENSATION
            return success, dict(outcome.value), _note(outcome)

    def _dispatch(self, request: Request) -> Answer:
        try:
            endpoint, args = self._url_map.bind_to_environ(request.environ).match()
        except HTTPException as exc:
            return exc.code or 404, {"error": f"{exc.name}: {request.method} {request.path}"}
        raw = request.get_data()
        body: Any = {}
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return 400, {"error": "the body is not valid JSON"}
        if not isinstance(body, dict):
            return 422, {"error": "the body must be a JSON object"}
        if body.get("demo_fail") is True:
            return 422, {"error": DEMO_FAILURE}
        try:
            status, answer = getattr(self, str(endpoint))(body, **args)
        except ServiceError as exc:
            return exc.status, {"error": exc.message}
        return int(status), dict(answer)


class AuthDemo(DemoApp):
    """The platform service: users, workspaces, permission grants, quota reservations."""

    KIND = "auth"
    ROUTES = (
        ("POST", "/users", "create_user"),
        ("DELETE", "/users/<user_id>", "delete_user"),
        ("POST", "/users/<user_id>/workspaces", "create_workspace"),
        ("DELETE", "/workspaces/<workspace_id>", "delete_workspace"),
        ("POST", "/workspaces/<workspace_id>/permissions", "grant_permissions"),
        ("DELETE", "/workspaces/<workspace_id>/permissions/<permission_id>", "revoke_permissions"),
        ("POST", "/workspaces/<workspace_id>/quota-reservations", "reserve_quota"),
        (
            "DELETE",
            "/workspaces/<workspace_id>/quota-reservations/<reservation_id>",
            "release_quota",
        ),
    )
    PLANS = ("free", "pro", "team")
    ROLES = ("viewer", "editor", "admin")
    QUOTA_UNITS = 100_000  # per workspace

    def __init__(self, seed: bool = True) -> None:
        self.users: dict[str, JSON] = {}
        self.workspaces: dict[str, JSON] = {}
        self.permissions: dict[str, JSON] = {}
        self.reservations: dict[str, JSON] = {}
        super().__init__(seed)

    def seed(self) -> None:
        user = self.add_user("demo@example.com", "Demo User", user_id="usr_demo")
        self.add_workspace(user, "Demo workspace", workspace_id="ws_demo")

    def snapshot(self) -> JSON:
        return {
            "users": self.users,
            "workspaces": self.workspaces,
            "permissions": self.permissions,
            "quota_reservations": self.reservations,
        }

    # --- for tests and the seed ---------------------------------------------------------
    def add_user(
        self, email: str, name: str, plan: str = "free", user_id: str | None = None
    ) -> str:
        """Create a user directly; returns its id."""
        with self.lock:
            user_id = user_id or _new_id("usr_")
            self.users[user_id] = {
                "id": user_id,
                "email": email,
                "name": name,
                "plan": plan,
                "created_at": _now(),
            }
            return user_id

    def add_workspace(
        self, owner_id: str, name: str, default: bool = False, workspace_id: str | None = None
    ) -> str:
        """Create a workspace directly; returns its id."""
        with self.lock:
            _get(self.users, owner_id, "user")
            workspace_id = workspace_id or _new_id("ws_")
            self.workspaces[workspace_id] = {
                "id": workspace_id,
                "name": name,
                "owner_id": owner_id,
                "default": default,
                "plan": self.users[owner_id]["plan"],
                "created_at": _now(),
            }
            return workspace_id

    def remaining_units(self, workspace_id: str) -> int:
        used = sum(
            r["units"] for r in self.reservations.values() if r["workspace_id"] == workspace_id
        )
        return self.QUOTA_UNITS - int(used)

    # --- handlers -----------------------------------------------------------------------
    def create_user(self, body: JSON) -> Answer:
        email = _text(body, "email")
        if "@" not in email:
            raise ServiceError(422, "email is not an email address")
        name = _text(body, "name")
        plan = _choice(body, "plan", self.PLANS, "free")
        if any(u["email"].casefold() == email.casefold() for u in self.users.values()):
            raise ServiceError(409, f"a user with email {email!r} exists")
        user_id = self.add_user(email, name, plan)
        return 201, self.users[user_id]

    def delete_user(self, body: JSON, user_id: str) -> Answer:
        _get(self.users, user_id, "user")
        owned = sorted(w["id"] for w in self.workspaces.values() if w["owner_id"] == user_id)
        if owned:
            raise ServiceError(409, f"user {user_id!r} still owns workspaces {owned}")
        del self.users[user_id]
        return 200, {"id": user_id, "deleted": True}

    def create_workspace(self, body: JSON, user_id: str) -> Answer:
        owner = _get(self.users, user_id, "user")
        name = _text(body, "name")
        default = body.get("default", False)
        if not isinstance(default, bool):
            raise ServiceError(422, "default must be true or false")
        plan = _choice(body, "plan", self.PLANS, owner["plan"])
        if default and any(
            w["owner_id"] == user_id and w["default"] for w in self.workspaces.values()
        ):
            raise ServiceError(409, f"user {user_id!r} already has a default workspace")
        workspace_id = self.add_workspace(user_id, name, default)
        self.workspaces[workspace_id]["plan"] = plan
        return 201, self.workspaces[workspace_id]

    def delete_workspace(self, body: JSON, workspace_id: str) -> Answer:
        _get(self.workspaces, workspace_id, "workspace")
        grants = sorted(
            p["id"] for p in self.permissions.values() if p["workspace_id"] == workspace_id
        )
        if grants:
            raise ServiceError(409, f"workspace {workspace_id!r} still has permissions {grants}")
        del self.workspaces[workspace_id]
        return 200, {"id": workspace_id, "deleted": True}

    def grant_permissions(self, body: JSON, workspace_id: str) -> Answer:
        workspace = _get(self.workspaces, workspace_id, "workspace")
        owner_id = _text(body, "owner_id")
        if owner_id != workspace["owner_id"]:
            raise ServiceError(422, f"user {owner_id!r} does not own workspace {workspace_id!r}")
        members = _strings(body, "members") if "members" in body else []
        role = _choice(body, "member_role", self.ROLES, "editor")
        for member in members:
            _get(self.users, member, "user")
        grants = [{"user_id": owner_id, "role": "owner"}] + [
            {"user_id": member, "role": role} for member in members if member != owner_id
        ]
        permission_id = _new_id("perm_")
        self.permissions[permission_id] = {
            "id": permission_id,
            "workspace_id": workspace_id,
            "grants": grants,
        }
        return 201, self.permissions[permission_id]

    def revoke_permissions(self, body: JSON, workspace_id: str, permission_id: str) -> Answer:
        _get(self.workspaces, workspace_id, "workspace")
        grant = _get(self.permissions, permission_id, "permission")
        if grant["workspace_id"] != workspace_id:
            raise ServiceError(404, f"permission {permission_id!r} not found")
        del self.permissions[permission_id]
        return 200, {"id": permission_id, "revoked": True}

    def reserve_quota(self, body: JSON, workspace_id: str) -> Answer:
        _get(self.workspaces, workspace_id, "workspace")
        units = _int(body, "units", 1, self.QUOTA_UNITS)
        purpose = body.get("purpose") if isinstance(body.get("purpose"), str) else None
        remaining = self.remaining_units(workspace_id)
        if units > remaining:
            raise ServiceError(409, f"quota exceeded: {units} units asked, {remaining} left")
        reservation_id = _new_id("qr_")
        self.reservations[reservation_id] = {
            "id": reservation_id,
            "workspace_id": workspace_id,
            "units": units,
            "purpose": purpose,
        }
        return 201, {**self.reservations[reservation_id], "remaining": remaining - units}

    def release_quota(self, body: JSON, workspace_id: str, reservation_id: str) -> Answer:
        _get(self.workspaces, workspace_id, "workspace")
        reservation = _get(self.reservations, reservation_id, "quota reservation")
        if reservation["workspace_id"] != workspace_id:
            raise ServiceError(404, f"quota reservation {reservation_id!r} not found")
        del self.reservations[reservation_id]
        return 200, {
            "id": reservation_id,
            "released": True,
            "remaining": self.remaining_units(workspace_id),
        }


class AirtableDemo(DemoApp):
    """The Airtable gateway: bases with tables of records, base links, exports, update
    batches that can be reverted, webhooks and their deliveries."""

    KIND = "airtable"
    ROUTES = (
        ("POST", "/bases/<base_id>/links", "create_link"),
        ("DELETE", "/bases/<base_id>/links/<link_id>", "delete_link"),
        ("POST", "/bases/<base_id>/tables/<table>/exports", "create_export"),
        ("DELETE", "/bases/<base_id>/exports/<export_id>", "delete_export"),
        ("POST", "/bases/<base_id>/tables/<table>/batches", "create_batch"),
        ("POST", "/bases/<base_id>/batches/<batch_id>/revert", "revert_batch"),
        ("POST", "/bases/<base_id>/tables/<table>/records", "create_record"),
        ("DELETE", "/bases/<base_id>/tables/<table>/records/<record_id>", "delete_record"),
        ("POST", "/webhooks/<webhook_id>/deliveries", "create_delivery"),
        ("DELETE", "/webhooks/<webhook_id>/deliveries/<delivery_id>", "delete_delivery"),
    )

    def __init__(self, seed: bool = True) -> None:
        self.bases: dict[str, JSON] = {}
        self.links: dict[str, JSON] = {}
        self.exports: dict[str, JSON] = {}
        self.batches: dict[str, JSON] = {}
        self.webhooks: dict[str, JSON] = {}
        self.deliveries: dict[str, JSON] = {}
        super().__init__(seed)

    def seed(self) -> None:
        base = self.add_base(
            "Demo CRM",
            {
                "Contacts": [
                    {"Name": "  ada lovelace", "Email": " ADA@Example.com "},
                    {"Name": "grace hopper ", "Email": "Grace@Example.COM"},
                    {"Name": "alan turing", "Email": "alan@example.com"},
                ],
                "AI Results": [],
            },
            base_id="appDemoBase",
        )
        self.add_webhook(base, "Contacts", "https://hooks.example.com/airtable", "whDemo")

    def snapshot(self) -> JSON:
        return {
            "bases": self.bases,
            "links": self.links,
            "exports": self.exports,
            "batches": self.batches,
            "webhooks": self.webhooks,
            "deliveries": self.deliveries,
        }

    # --- for tests and the seed ---------------------------------------------------------
    def add_base(
        self,
        name: str,
        tables: Mapping[str, Iterable[Mapping[str, Any]]],
        base_id: str | None = None,
    ) -> str:
        """Create a base whose tables hold records with the given fields; returns its id."""
        with self.lock:
            base_id = base_id or _new_id("app")
            records: dict[str, dict[str, JSON]] = {}
            for table, rows in tables.items():
                records[table] = {}
                for fields in rows:
                    record_id = _new_id("rec")
                    records[table][record_id] = {"id": record_id, "fields": dict(fields)}
            self.bases[base_id] = {"id": base_id, "name": name, "tables": records}
            return base_id

    def add_webhook(
        self, base_id: str, table: str, callback_url: str, webhook_id: str | None = None
    ) -> str:
        """Register an incoming webhook that writes to `table`; returns its id."""
        with self.lock:
            self._table(base_id, table)
            webhook_id = webhook_id or _new_id("wh")
            self.webhooks[webhook_id] = {
                "id": webhook_id,
                "base_id": base_id,
                "table": table,
                "callback_url": callback_url,
            }
            return webhook_id

    def records(self, base_id: str, table: str) -> dict[str, JSON]:
        """A copy of a table's records by id."""
        with self.lock:
            return copy.deepcopy(self._table(base_id, table))

    def _table(self, base_id: str, table: str) -> dict[str, JSON]:
        base = _get(self.bases, base_id, "base")
        tables: dict[str, dict[str, JSON]] = base["tables"]
        if table not in tables:
            raise ServiceError(404, f"table {table!r} not found in base {base_id!r}")
        return tables[table]

    # --- handlers -----------------------------------------------------------------------
    def create_link(self, body: JSON, base_id: str) -> Answer:
        _get(self.bases, base_id, "base")
        workspace_id = _text(body, "workspace_id")
        if any(
            link["base_id"] == base_id and link["workspace_id"] == workspace_id
            for link in self.links.values()
        ):
            raise ServiceError(409, f"base {base_id!r} is already linked to {workspace_id!r}")
        link_id = _new_id("lnk")
        self.links[link_id] = {"id": link_id, "base_id": base_id, "workspace_id": workspace_id}
        return 201, self.links[link_id]

    def delete_link(self, body: JSON, base_id: str, link_id: str) -> Answer:
        link = _get(self.links, link_id, "link")
        if link["base_id"] != base_id:
            raise ServiceError(404, f"link {link_id!r} not found")
        del self.links[link_id]
        return 200, {"id": link_id, "deleted": True}

    def create_export(self, body: JSON, base_id: str, table: str) -> Answer:
        rows = self._table(base_id, table)
        fields = _strings(body, "fields") if body.get("fields") is not None else None
        limit = _int(body, "max_records", 1, 1000) if "max_records" in body else 100
        exported = [
            {
                "id": row["id"],
                "fields": {k: v for k, v in row["fields"].items() if fields is None or k in fields},
            }
            for row in list(rows.values())[:limit]
        ]
        export_id = _new_id("exp")
        self.exports[export_id] = {
            "id": export_id,
            "base_id": base_id,
            "table": table,
            "records": exported,
        }
        return 201, {**self.exports[export_id], "count": len(exported)}

    def delete_export(self, body: JSON, base_id: str, export_id: str) -> Answer:
        export = _get(self.exports, export_id, "export")
        if export["base_id"] != base_id:
            raise ServiceError(404, f"export {export_id!r} not found")
        del self.exports[export_id]
        return 200, {"id": export_id, "deleted": True}

    def create_batch(self, body: JSON, base_id: str, table: str) -> Answer:
        rows = self._table(base_id, table)
        updates = _record_updates(body, "records")
        for update in updates:
            _get(rows, update["id"], "record")
        before: dict[str, JSON] = {}
        for update in updates:
            record = rows[update["id"]]
            before.setdefault(update["id"], copy.deepcopy(record["fields"]))
            record["fields"].update(update["fields"])
        batch_id = _new_id("bat")
        self.batches[batch_id] = {
            "id": batch_id,
            "base_id": base_id,
            "table": table,
            "source": body.get("source"),
            "before": before,
        }
        return 201, {
            "id": batch_id,
            "base_id": base_id,
            "table": table,
            "updated": len(updates),
            "record_ids": sorted(before),
        }

    def revert_batch(self, body: JSON, base_id: str, batch_id: str) -> Answer:
        batch = _get(self.batches, batch_id, "batch")
        if batch["base_id"] != base_id:
            raise ServiceError(404, f"batch {batch_id!r} not found")
        rows = self._table(base_id, batch["table"])
        for record_id, fields in batch["before"].items():
            if record_id in rows:
                rows[record_id]["fields"] = copy.deepcopy(fields)
        del self.batches[batch_id]
        return 200, {"id": batch_id, "reverted": len(batch["before"])}

    def create_record(self, body: JSON, base_id: str, table: str) -> Answer:
        rows = self._table(base_id, table)
        fields = body.get("fields")
        if not isinstance(fields, dict):
            raise ServiceError(422, "fields is required (a JSON object)")
        record_id = _new_id("rec")
        rows[record_id] = {"id": record_id, "fields": dict(fields)}
        return 201, rows[record_id]

    def delete_record(self, body: JSON, base_id: str, table: str, record_id: str) -> Answer:
        rows = self._table(base_id, table)
        _get(rows, record_id, "record")
        del rows[record_id]
        return 200, {"id": record_id, "deleted": True}

    def create_delivery(self, body: JSON, webhook_id: str) -> Answer:
        webhook = _get(self.webhooks, webhook_id, "webhook")
        event_id = _text(body, "event_id")
        changes = _record_updates(body, "changes") if "changes" in body else []
        rows = self._table(webhook["base_id"], webhook["table"])
        for change in changes:
            _get(rows, change["id"], "record")
        if any(
            d["webhook_id"] == webhook_id and d["event_id"] == event_id
            for d in self.deliveries.values()
        ):
            raise ServiceError(409, f"event {event_id!r} was already delivered")
        delivery_id = _new_id("dlv")
        self.deliveries[delivery_id] = {
            "id": delivery_id,
            "webhook_id": webhook_id,
            "event_id": event_id,
            "changes": len(changes),
        }
        return 201, {
            **self.deliveries[delivery_id],
            "base_id": webhook["base_id"],
            "table": webhook["table"],
            "callback_url": webhook["callback_url"],
            "status": "accepted",
        }

    def delete_delivery(self, body: JSON, webhook_id: str, delivery_id: str) -> Answer:
        delivery = _get(self.deliveries, delivery_id, "delivery")
        if delivery["webhook_id"] != webhook_id:
            raise ServiceError(404, f"delivery {delivery_id!r} not found")
        del self.deliveries[delivery_id]
        return 200, {"id": delivery_id, "deleted": True}


class NotificationDemo(DemoApp):
    """The automation services: notifications, record transformations, AI analysis jobs."""

    KIND = "notification"
    ROUTES = (
        ("POST", "/notifications", "send_notification"),
        ("POST", "/transformations", "create_transformation"),
        ("DELETE", "/transformations/<transformation_id>", "delete_transformation"),
        ("POST", "/ai/jobs", "create_job"),
        ("DELETE", "/ai/jobs/<job_id>", "delete_job"),
    )
    COMMANDS = {
        "ai.analysis_requested": ("create_job", "ai.analysis_completed", "ai.analysis_failed"),
    }
    COMMAND_GROUP = "demo-automation"
    CHANNELS = ("email", "in_app", "webhook")
    OPERATIONS: dict[str, Callable[[str], str]] = {
        "trim": str.strip,
        "lowercase": str.lower,
        "uppercase": str.upper,
        "titlecase": str.title,
    }
    ANALYSES = ("summary", "sentiment", "classification")

    def __init__(self, seed: bool = True) -> None:
        self.notifications: dict[str, JSON] = {}
        self.transformations: dict[str, JSON] = {}
        self.jobs: dict[str, JSON] = {}
        super().__init__(seed)

    def snapshot(self) -> JSON:
        return {
            "notifications": self.notifications,
            "transformations": self.transformations,
            "ai_jobs": self.jobs,
        }

    # --- handlers -----------------------------------------------------------------------
    def send_notification(self, body: JSON) -> Answer:
        channel = _choice(body, "channel", self.CHANNELS, "")
        to = _text(body, "to")
        template = _text(body, "template")
        data = body.get("data", {})
        if not isinstance(data, dict):
            raise ServiceError(422, "data must be a JSON object")
        notification_id = _new_id("ntf_")
        self.notifications[notification_id] = {
            "id": notification_id,
            "channel": channel,
            "to": to,
            "template": template,
            "data": data,
            "status": "sent",
            "sent_at": _now(),
        }
        return 201, {"id": notification_id, "status": "sent"}

    def create_transformation(self, body: JSON) -> Answer:
        records = _record_updates(body, "records")
        fields = _strings(body, "fields")
        operations = _strings(body, "operations", self.OPERATIONS)
        changed: list[JSON] = []
        for record in records:
            new: JSON = {}
            for name in fields:
                value = record["fields"].get(name)
                if not isinstance(value, str):
                    continue
                result = value
                for operation in operations:
                    result = self.OPERATIONS[operation](result)
                if result != value:
                    new[name] = result
            if new:
                changed.append({"id": record["id"], "fields": new})
        transformation_id = _new_id("trf_")
        self.transformations[transformation_id] = {
            "id": transformation_id,
            "export_id": body.get("export_id"),
            "operations": operations,
            "records": changed,
        }
        return 201, {**self.transformations[transformation_id], "changed": len(changed)}

    def delete_transformation(self, body: JSON, transformation_id: str) -> Answer:
        _get(self.transformations, transformation_id, "transformation")
        del self.transformations[transformation_id]
        return 200, {"id": transformation_id, "deleted": True}

    def create_job(self, body: JSON) -> Answer:
        workspace_id = _text(body, "workspace_id")
        base_id = _text(body, "base_id")
        table = _text(body, "table")
        analysis = _choice(body, "analysis_type", self.ANALYSES, "")
        prompt = body.get("prompt") or ""
        if not isinstance(prompt, str):
            raise ServiceError(422, "prompt must be a string")
        units = _int(body, "max_units", 1, 1_000_000)
        reservation = _text(body, "quota_reservation_id")
        summary = f"{analysis} of table {table!r} in base {base_id}"
        if prompt:
            summary += f" ({prompt})"
        job_id = _new_id("job_")
        self.jobs[job_id] = {
            "id": job_id,
            "status": "succeeded",
            "workspace_id": workspace_id,
            "base_id": base_id,
            "table": table,
            "analysis_type": analysis,
            "quota_reservation_id": reservation,
            "units_used": units,
            "result": {"summary": summary},
        }
        return 201, self.jobs[job_id]

    def delete_job(self, body: JSON, job_id: str) -> Answer:
        _get(self.jobs, job_id, "AI job")
        del self.jobs[job_id]
        return 200, {"id": job_id, "deleted": True}


_APPS: dict[str, type[DemoApp]] = {
    "auth": AuthDemo,
    "airtable": AirtableDemo,
    "notification": NotificationDemo,
}


def create_demo_app(kind: str) -> DemoApp:
    """A new WSGI app playing `kind` ("auth", "airtable" or "notification"), seeded with the
    demo data. The app is callable as WSGI and has `.state()` for its contents."""
    if kind not in _APPS:
        raise ValueError(f"unknown demo service {kind!r}: one of {', '.join(KINDS)}")
    return _APPS[kind]()


def _typed(app: DemoApp, cls: type[_App]) -> _App:
    if not isinstance(app, cls):
        raise TypeError(f"{app!r} is not a {cls.__name__}")
    return app


class _QuietHandler(WSGIRequestHandler):
    """The apps log their own line per request; werkzeug's access line would repeat it."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _entries(answer: Any) -> list[tuple[str, dict[str, str] | None]]:
    """XREADGROUP's entries (RESP2: [[stream, entries]]; RESP3: {stream: entries})."""
    batches = answer.values() if isinstance(answer, dict) else [b for _, b in answer or []]
    return [(str(entry_id), fields) for batch in batches for entry_id, fields in batch]


class CommandConsumer:
    """Consumes `<prefix>stream:commands` for one app (its `COMMANDS`) in a thread, in the
    app's consumer group; replies go to `<prefix>stream:events`.

    At start, and after losing Redis, it first goes once through the entries delivered to it
    but not acknowledged (id 0), then reads new ones (`>`), blocking COMMAND_BLOCK_MS.
    """

    def __init__(self, app: DemoApp, redis_url: str, key_prefix: str) -> None:
        self.app = app
        self.commands = f"{key_prefix}stream:commands"
        self.events = f"{key_prefix}stream:events"
        self.group = app.COMMAND_GROUP
        self.name = f"{socket.gethostname()}-{os.getpid()}-{app.KIND}"
        # No socket timeout: redis-py 8's default (5 s) would cut a long BLOCK short.
        self.client = redis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=None, socket_connect_timeout=5
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"demo-{app.KIND}-commands", daemon=True
        )

    def start(self) -> CommandConsumer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading (within about COMMAND_BLOCK_MS) and close the connection."""
        self._stop.set()
        self._thread.join(COMMAND_BLOCK_MS / 1000 + 5)
        if not self._thread.is_alive():
            self.client.close()

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.commands, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _run(self) -> None:
        group_ready = False
        backlog: str | None = "0"  # where the pass over unacknowledged entries is, if any
        while not self._stop.is_set():
            try:
                if not group_ready:
                    self._ensure_group()
                    group_ready = True
                answer: Any = self.client.xreadgroup(
                    self.group,
                    self.name,
                    {self.commands: backlog or ">"},
                    count=50,
                    block=None if backlog else COMMAND_BLOCK_MS,
                )
                entries = _entries(answer)
                if backlog is not None:
                    backlog = entries[-1][0] if entries else None
                for entry_id, fields in entries:
                    self._handle_safely(entry_id, fields)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("%s commands: Redis unreachable (%s); retrying", self.app.KIND, exc)
                group_ready, backlog = False, "0"
                self._stop.wait(1)
            except redis.RedisError as exc:  # e.g. NOGROUP: Redis lost its data meanwhile
                log.warning("%s commands: %s; retrying", self.app.KIND, exc)
                group_ready, backlog = False, "0"
                self._stop.wait(1)

    def _handle_safely(self, entry_id: str, fields: Mapping[str, str] | None) -> None:
        try:
            self._handle(entry_id, fields)
        except redis.RedisError:
            raise
        except Exception:  # a bug: leave it pending, to be retried by the next backlog pass
            log.exception("%s command %s not handled; it stays pending", self.app.KIND, entry_id)

    def _handle(self, entry_id: str, fields: Mapping[str, str] | None) -> None:
        if not fields:  # trimmed away since it was delivered
            self.client.xack(self.commands, self.group, entry_id)
            return
        command_type = fields.get("type", "")
        try:
            data = json.loads(fields.get("data") or "{}")
        except ValueError:
            data = None
        outcome = self.app.command(command_type, data, fields.get("idempotency_key", ""))
        if outcome is None:  # not ours
            self.client.xack(self.commands, self.group, entry_id)
            return
        reply_type, reply, note = outcome
        saga_id, correlation_id = fields.get("saga_id", ""), fields.get("correlation_id", "")
        step = fields.get("step", "")
        reply_id = self.client.xadd(
            self.events,
            {
                "type": reply_type,
                "saga_id": saga_id,
                "step": step,
                "correlation_id": correlation_id,
                "data": json.dumps(reply),
            },
        )
        self.client.xack(self.commands, self.group, entry_id)
        log.info(
            "%s command %s %s -> %s %s correlation_id=%s saga_id=%s step=%s%s",
            self.app.KIND,
            command_type,
            entry_id,
            reply_type,
            reply_id,
            correlation_id or "-",
            saga_id or "-",
            step or "-",
            f" ({note})" if note else "",
            extra={
                "service": self.app.KIND,
                "command": command_type,
                "entry_id": entry_id,
                "reply": reply_type,
                "reply_id": str(reply_id),
                "replayed": note == REPLAYED,
                "barrier": note or None,
                "correlation_id": correlation_id or None,
                "saga_id": saga_id or None,
                "step": step or None,
                "trace_id": _trace_of(fields.get("traceparent")),
            },
        )


class DemoServices:
    """Demo services running in threads: `urls` (kind -> base URL), `state(kind)`,
    `app(kind)` for seeding, `env()` with the orchestrator's variables, `stop()`."""

    def __init__(
        self,
        apps: dict[str, DemoApp],
        servers: dict[str, BaseWSGIServer],
        threads: dict[str, threading.Thread],
        host: str,
        consumers: list[CommandConsumer] | None = None,
    ) -> None:
        self.apps = apps
        self._servers = servers
        self._threads = threads
        self.consumers = list(consumers or [])
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
        if ":" in shown:
            shown = f"[{shown}]"
        self.urls: dict[str, str] = {
            kind: f"http://{shown}:{server.server_port}" for kind, server in servers.items()
        }

    def app(self, kind: str) -> DemoApp:
        """The live app of `kind` (to seed data, e.g. `app("auth").add_user(...)`)."""
        return self.apps[kind]

    @property
    def auth(self) -> AuthDemo:
        """The live auth app (`add_user`, `add_workspace`)."""
        return _typed(self.apps["auth"], AuthDemo)

    @property
    def airtable(self) -> AirtableDemo:
        """The live airtable app (`add_base`, `add_webhook`, `records`)."""
        return _typed(self.apps["airtable"], AirtableDemo)

    @property
    def notification(self) -> NotificationDemo:
        """The live notification app."""
        return _typed(self.apps["notification"], NotificationDemo)

    def state(self, kind: str) -> dict[str, Any]:
        """A deep copy of what the service `kind` holds now."""
        return self.apps[kind].state()

    def env(self) -> dict[str, str]:
        """The orchestrator's variables pointing at these services."""
        return {ENV_VARS[kind]: url for kind, url in self.urls.items()}

    def stop(self) -> None:
        """Stop the command consumers, then every server, and wait for their threads."""
        for consumer in self.consumers:
            consumer.stop()
        for kind, server in self._servers.items():
            server.shutdown()
            server.server_close()
            self._threads[kind].join(5)

    def __enter__(self) -> DemoServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_threads(
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    redis_url: str | None = None,
    key_prefix: str = "saga:",
) -> DemoServices:
    """Start the demo services in daemon threads (threaded werkzeug servers).

    `ports` maps kind -> port (0: a free port); only the kinds it names are started.
    None starts all three on the default ports (auth 8101, airtable 8102, notification 8103).
    With `redis_url`, the services that consume commands (notification) also read
    `<key_prefix>stream:commands`, in a thread each; without it they serve HTTP only.
    """
    wanted = dict(DEFAULT_PORTS if ports is None else ports)
    unknown = sorted(set(wanted) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown demo services {unknown}: choose from {', '.join(KINDS)}")
    apps: dict[str, DemoApp] = {}
    servers: dict[str, BaseWSGIServer] = {}
    threads: dict[str, threading.Thread] = {}
    try:
        for kind in KINDS:
            if kind not in wanted:
                continue
            apps[kind] = create_demo_app(kind)
            servers[kind] = make_server(
                host, wanted[kind], apps[kind], threaded=True, request_handler=_QuietHandler
            )
            threads[kind] = threading.Thread(
                target=servers[kind].serve_forever, name=f"demo-{kind}", daemon=True
            )
            threads[kind].start()
        consumers = [
            CommandConsumer(app, redis_url, key_prefix).start()
            for app in apps.values()
            if redis_url and app.COMMANDS
        ]
    except BaseException:
        for kind, server in servers.items():
            if kind in threads:
                server.shutdown()
            server.server_close()
        raise
    return DemoServices(apps, servers, threads, host, consumers)


def _step_of(idempotency_key: str | None) -> str | None:
    """The step an orchestrator call is for: its key is `<saga id>:<step>:<phase>`."""
    parts = (idempotency_key or "").split(":")
    return parts[1] if len(parts) == 3 else None


def _trace_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent (`00-<trace id>-<span id>-<flags>`), for the log."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def serve(
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    redis_url: str | None = None,
    key_prefix: str = "saga:",
) -> None:
    """Run the demo services until SIGINT or SIGTERM (default ports 8101, 8102, 8103);
    with `redis_url`, the notification service consumes `<key_prefix>stream:commands` too."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _stop)
    services: DemoServices | None = None
    try:
        services = start_in_threads(host, ports, redis_url, key_prefix)
        for kind, url in services.urls.items():
            log.info("demo %s service on %s (%s=%s)", kind, url, ENV_VARS[kind], url)
        for consumer in services.consumers:
            log.info(
                "demo %s service consumes %s (group %s) on %s, replies to %s",
                consumer.app.KIND,
                consumer.commands,
                consumer.group,
                _masked(redis_url or ""),
                consumer.events,
            )
        if not redis_url:
            log.info("demo services: no Redis URL, so no commands stream consumer (HTTP only)")
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if services is not None:
            services.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)
        log.info("demo services stopped")
