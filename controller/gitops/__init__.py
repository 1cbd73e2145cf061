"""GitOps shells around the reconcile engine: Git sync, directory watch, PR diff,
reviewed plan files and transition webhooks.

Nothing here decides anything: what to do comes from core.plan through
engine.reconcile. These modules fetch manifests, call the engine, and record
which commit was applied.
"""
