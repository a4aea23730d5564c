"""The `saga-orchestrator` command: starts the components (more commands arrive with the API)."""

from __future__ import annotations

import sys

import click


@click.group()
def main() -> None:
    """Saga orchestrator: distributed transactions with compensation."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker (extra options go to `celery worker`)."""
    from wsgi import celery_app

    celery_app.worker_main(["worker", *celery_args])


if __name__ == "__main__":
    sys.exit(main())
