"""Demo stand-ins for the platform's services (`auth`, `airtable`, `notification`).

They keep their state in memory and serve exactly the calls of the five predefined
workflows (`sagas/templates.py`), for a local run and for the tests.
"""

from __future__ import annotations

from demo.services import DemoServices, create_demo_app, serve, start_in_threads

__all__ = ["DemoServices", "create_demo_app", "serve", "start_in_threads"]
