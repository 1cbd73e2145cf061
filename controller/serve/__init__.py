"""`controller serve`: the search service (FastAPI on uvicorn, extra `[serve]`).

A shell: routing, loading and searching live in engine.serving (shared with
`controller query`); the event log in store.events. See docs/serving.md.
"""

from controller.serve.app import create_app

__all__ = ["create_app"]
