"""The Kubernetes operator: a shell around the same reconcile loop the CLI uses.

CR body -> LoadedManifest (body.py) -> engine.reconcile_index -> one status patch,
Events, a routing ConfigMap and metrics (handlers.py). No decision is made here:
phases, conditions, gates and rollbacks all come from core/ via the engine.
"""
