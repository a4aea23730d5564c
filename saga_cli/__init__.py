"""The `saga-orchestrator` command: runs the components and talks to the REST API.

Component commands (`api`, `worker`, `beat`, `events`, `flower`, `demo-services`, in
components.py) pass unknown options through to gunicorn, Celery or Flower. Client commands
(`start`, `status`, `list`, `compensate` in sagas.py; the repair commands `actions`,
`history`, `resolve`, `skip`, `retry`, `cancel`, `rerun` in repair.py; `webhooks
dead-letters|retry` in webhooks.py) call the API over HTTP (client.py) and show its answers
(render.py); `lint`, `plan`, `workflow push|show|retire` and `schedule
create|list|pause|resume|delete` are in workflows.py; they import httpx and rich only when
they run, so that `--help` and the component commands start fast. Keep it so: at module
level, this package imports click and the standard library only.
"""

from __future__ import annotations

import click

from saga_cli.components import api, beat, demo_services, events, flower, worker
from saga_cli.repair import actions, cancel, history, rerun, resolve, retry, skip
from saga_cli.sagas import compensate, list_sagas, start, status
from saga_cli.webhooks import webhooks
from saga_cli.workflows import lint, plan, schedule, workflow

__all__ = ["main"]


@click.group()
def main() -> None:
    """Saga orchestrator: distributed transactions with compensation.

    \b
    Components: api, worker, beat, events, flower, demo-services.
    API client: start, status, list, compensate.
    Repair (operator key, --reason): actions, history, resolve, skip, retry, cancel, rerun.
    Completion webhooks: webhooks dead-letters, webhooks retry ID (operator key).
    Workflows: lint FILE..., plan FILE --fail-at STEP, workflow push|show|retire,
    schedule create|list|pause|resume|delete.
    """


for command in (
    worker,
    api,
    beat,
    flower,
    events,
    demo_services,
    start,
    status,
    list_sagas,
    compensate,
    actions,
    history,
    resolve,
    skip,
    retry,
    cancel,
    rerun,
    webhooks,
    lint,
    plan,
    workflow,
    schedule,
):
    main.add_command(command)
