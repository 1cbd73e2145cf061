"""`controller serve`: the search service (FastAPI on uvicorn, extra `[serve]`).

A shell: routing, loading and searching live in engine.serving (shared with
`controller query`); the event log in store.events. See docs/serving.md.

`create_app` resolves lazily: the verb module (serve_cmd) lives in this package
and must register its parser without FastAPI installed or imported.
"""

from typing import Any

__all__ = ["create_app"]


def __getattr__(attr: str) -> Any:
    if attr == "create_app":
        from controller.serve.app import create_app
        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
