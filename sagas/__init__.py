"""The saga engine: definitions, state machine, Redis store and execution logic.

Nothing here imports Flask or Celery: the engine is handed a `Dispatcher` that enqueues work.
"""
