"""The dashboard in a real browser: Debian's chromium driven by Playwright, against the API
under gunicorn (`saga-orchestrator api`) and a real Celery worker, as the on-call engineer
would use it.

A saga's second undo fails (the stub service answers 503 until the compensation timeout), so
it ends COMPENSATION_FAILED with the first undo still to do. In the browser: log in with an
operator key, find the saga in the list filtered by COMPENSATION_FAILED, open it, resolve the
failed undo with a reason, and watch the page (htmx polling) reach COMPENSATED once the worker
has run the older undo for real.

`SAGA_SCREENSHOTS=docs/img` also saves the pages as PNG there (docs/operations.md shows them).
Playwright never downloads a browser here: `make test` installs Debian's chromium.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port, stop_process, wait_final
from tests.stubs import StubService

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CLI = str(Path(sys.executable).parent / "saga-orchestrator")
OPERATOR_KEY = f"browser-operator-{uuid.uuid4().hex}"
KEYS = f"night-shift:operator:{OPERATOR_KEY},viewer:reader:browser-reader-{uuid.uuid4().hex}"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def api_url(
    service_env: dict[str, str], worker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`saga-orchestrator api` (gunicorn, two workers) with this run's Redis and worker."""
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("ui-api")
    port = free_port()
    log = workdir / "api.log"
    env = {
        **os.environ,
        **service_env,
        "PYTHONPATH": str(ROOT),
        "SAGA_API_KEYS": KEYS,
        "WEB_CONCURRENCY": "2",  # two workers must agree on the session secret
        "TMPDIR": str(workdir),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("SAGA_SECRET_KEY", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CLI, "api", "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the API exited: {log.read_text()[-3000:]}")
            try:
                httpx.get(f"{url}/health/", timeout=1)
                break
            except httpx.TransportError:
                assert time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
        TIMINGS["api start"] = time.monotonic() - started
        yield url
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        TIMINGS["browser start"] = time.monotonic() - started
        yield chromium
        chromium.close()


def checkout(tag: str, *, undo_fails: bool, fails: bool = True) -> dict[str, Any]:
    """Reserve, charge, ship; shipping fails (422) when `fails`. The charge's refund goes to
    a switch of the stub that answers 503 while it is down."""
    return {
        "saga_type": "checkout",
        "payload": {"order_id": f"ord-{tag}", "amount_cents": 4999, "note": "<b>rush</b>"},
        "steps": [
            {
                "name": "reserve_stock",
                "action": {"service": "inventory", "path": f"/ok/reserve/{tag}"},
                "compensation": {
                    "service": "inventory",
                    "method": "DELETE",
                    "path": f"/ok/reserve/{tag}",
                },
            },
            {
                "name": "charge_card",
                "action": {"service": "payments", "path": f"/ok/charge/{tag}"},
                "compensation": {
                    "service": "payments",
                    "path": f"/switch/refund-{tag if undo_fails else 'up'}/refund",
                },
            },
            {
                "name": "ship",
                "action": {
                    "service": "svc",
                    "path": f"/status/422/ship/{tag}" if fails else f"/ok/ship/{tag}",
                },
            },
        ],
    }


def test_an_operator_repairs_a_compensation_failed_saga_in_the_browser(
    api_url: str, browser: Any, engine: Any, stub: StubService
) -> None:
    begun = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    stub.down.add(f"refund-{tag}")  # the refund cannot be done: the PSP is "down"
    sid = engine.start(checkout(tag, undo_fails=True)).saga["saga_id"]
    # Company for the overview: one saga completes, one is compensated.
    others = [
        engine.start(checkout(f"{tag}-ok", undo_fails=False, fails=False)).saga["saga_id"],
        engine.start(checkout(f"{tag}-undone", undo_fails=False)).saga["saga_id"],
    ]
    saga = wait_final(engine, sid, timeout=60)
    assert saga["status"] == "COMPENSATION_FAILED", saga
    assert [s["compensation"] and s["compensation"]["status"] for s in saga["steps"]] == [
        "PENDING",
        "COMPENSATION_FAILED",
        None,
    ]
    for other in others:
        wait_final(engine, other, timeout=60)
    TIMINGS["saga set-up"] = time.monotonic() - begun

    shots = screenshots_dir()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))

    def shot(name: str) -> None:
        if shots is not None:
            page.screenshot(path=str(shots / f"dashboard-{name}.png"), full_page=True)

    clicked = time.monotonic()
    page.goto(f"{api_url}/ui/")
    page.wait_for_selector("#key")  # sent to the login form
    page.fill("#key", OPERATOR_KEY)
    page.click("button:has-text('Log in')")
    page.wait_for_selector("#overview")
    assert page.is_visible(f"#overview a[href='/ui/sagas/{sid}']")  # needs a person
    shot("overview")

    page.click("header nav a:has-text('Sagas')")
    page.select_option("#f-status", "COMPENSATION_FAILED")
    page.click("button:has-text('Filter')")
    row = page.locator(f"#rows a[href='/ui/sagas/{sid}']")
    row.wait_for()
    assert "status=COMPENSATION_FAILED" in page.url
    assert page.locator("#rows").inner_text().count("COMPENSATION_FAILED") >= 1
    shot("list")

    row.click()
    page.wait_for_selector("#live[data-status='COMPENSATION_FAILED']")
    assert "Needs a person" in page.inner_text("#needs-a-person")
    assert "<b>rush</b>" in page.inner_text("#payload pre")  # the payload's text, not markup
    shot("saga-compensation-failed")

    page.fill("#reason-2-resolve", "refunded by hand in the PSP console (ticket OPS-4711)")
    page.click("button:has-text('Resolve charge_card')")
    page.wait_for_selector(".flash-ok")
    assert "counts as done by hand" in page.inner_text(".flash-ok")
    # The worker now undoes reserve_stock for real; the page follows by itself (htmx).
    page.wait_for_selector("#live[data-status='COMPENSATED']", timeout=30_000)
    steps = page.inner_text("ol.timeline")
    assert "resolved by hand" in steps
    assert "night-shift" in page.inner_text("table.history")
    TIMINGS["browser steps"] = time.monotonic() - clicked
    shot("saga-repaired")
    context.close()

    saga = engine.get(sid)
    assert saga["status"] == "COMPENSATED"
    assert saga["steps"][1]["compensation"]["resolved_by_hand"] is True
    released = [c for c in stub.calls(sid) if c.method == "DELETE"]
    assert [c.path for c in released] == [f"/ok/reserve/{tag}"]  # the older undo, run once
    entry = [h for h in engine.history(sid) if h["event"] == "compensation_resolved"][-1]
    assert entry["actor"] == "night-shift"
    problems = [line for line in console if line.startswith("error")]
    assert not problems, problems  # no CSP violation, no failed request
    TIMINGS["total"] = time.monotonic() - begun
    print("browser test timings (s):", {k: round(v, 2) for k, v in TIMINGS.items()})


def screenshots_dir() -> Path | None:
    target = os.environ.get("SAGA_SCREENSHOTS")
    if not target:
        return None
    path = Path(target) if Path(target).is_absolute() else ROOT / target
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_saga_page_follows_a_running_saga_but_keeps_what_is_being_typed(
    api_url: str, browser: Any, engine: Any
) -> None:
    """While a person types a reason, the live refresh waits (static/ui.js); once the form
    is left empty again, the page catches up with the saga."""
    steps = [
        {"name": f"slow_{i}", "action": {"service": "svc", "path": f"/slow/0.7/{i}"}}
        for i in range(6)
    ]
    sid = engine.start({"saga_type": "slow", "steps": steps}).saga["saga_id"]
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{api_url}/ui/login")
    page.fill("#key", OPERATOR_KEY)
    page.click("button:has-text('Log in')")
    page.goto(f"{api_url}/ui/sagas/{sid}")
    page.wait_for_selector("#live[data-status='RUNNING']")
    page.fill("#reason-compensate", "half typed")
    page.locator("body").click(position={"x": 5, "y": 5})  # the field loses focus; text stays
    wait_final(engine, sid, timeout=30)
    time.sleep(3)  # a poll or two came due meanwhile
    assert page.input_value("#reason-compensate") == "half typed"
    assert page.get_attribute("#live", "data-status") == "RUNNING"  # held back
    assert page.is_visible("#live.paused")  # and the page says so
    page.fill("#reason-compensate", "")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.wait_for_selector("#live[data-status='COMPLETED']")
    assert page.get_attribute("#live", "hx-trigger") is None  # final: no more refreshes
    assert page.input_value("#reason-compensate") == ""  # a COMPLETED saga's form, fresh
    context.close()
