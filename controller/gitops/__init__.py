"""GitOps shells around the reconcile engine: Git sync, directory watch, PR diff,
and the `sync`, `watch` and `diff` verbs (their modules, *_cmd.py, are loaded by
name from the verb table in cli/main.py).

Nothing here decides anything: what to do comes from core.plan through
engine.reconcile. These modules fetch manifests, call the engine, and record
which commit was applied (store.syncstate). Webhooks (engine.notify) and reviewed
plan files (engine.planfile) are engine effects that `reconcile`/`apply` use too.
"""
