"""`controller status [NAME]`: phase, routing and the last gate values."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from controller.cliargs import add_output_arg, add_store_arg, add_verb, emit, resolve_store
from controller.errors import ControllerError

if TYPE_CHECKING:
    from controller.store.fs import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "status", help="show the status of one index or all",
                 description=("Phase, alias, stable and candidate (version and model fingerprint), weight, "
                              "gate values, metrics, drift, most regressed queries and conditions.\n"
                              "-o json|yaml: an object for NAME, a list without. Exit 0 (also for a degraded "
                              "index: use `controller wait` to gate on health), 1 unknown index, or a listed "
                              "index whose status cannot be read (shown with phase Unknown and an error)."),
                 examples="""
                     controller status
                     controller status quickstart -o yaml
                     controller status quickstart -o json | jq .conditions
                 """)
    p.add_argument("name", nargs="?", help="index name (default: every index in the store)")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import controller as api
    from controller.cli.get_cmd import warn_unreadable
    from controller.store.syncstate import sync_state

    store = resolve_store(args)
    if args.name:
        statuses = [_with_sync(api.status(args.name, store), sync_state(store, args.name))]
    else:  # an unreadable index is a row with phase Unknown and an error: it must not hide the others
        statuses = [_listed_with_sync(store, s) for s in api.status(None, store)]
    if not emit(statuses[0] if args.name else statuses, args.output):
        if not statuses:
            print(f"no indexes in {store.root}")
        for s in statuses:
            print(render(s))
    return warn_unreadable(statuses)


def _with_sync(status: dict[str, Any], sync: dict[str, Any] | None) -> dict[str, Any]:
    return {**status, "sync": sync} if sync else status


def _listed_with_sync(store: Store, status: dict[str, Any]) -> dict[str, Any]:
    """A listed status with its Git sync state; a damaged sync record is the row's error, not the listing's."""
    from controller.store.syncstate import sync_state

    if status.get("error"):
        return status
    try:
        return _with_sync(status, sync_state(store, status["name"]))
    except ControllerError as exc:
        return {**status, "error": str(exc)}


def _version(ref: dict[str, Any] | None) -> str:
    if not ref:
        return "-"
    fp = ref["fingerprint"]
    return f"{ref['version']} ({fp['provider']}/{fp['name']}@{fp['version']}, {ref['factory']})"


def render(s: dict[str, Any]) -> str:
    from controller.api import UNKNOWN_PHASE  # here: verb modules import nothing of the engine at start-up

    if s.get("phase") == UNKNOWN_PHASE and s.get("error"):  # its status could not be read: nothing else is known
        return f"{s['name']}  phase {UNKNOWN_PHASE}\n  error      {s['error']}"
    lines = [
        f"{s['name']}  phase {s['phase']}",
        f"  alias      {s['alias']}",
        f"  stable     {_version(s.get('stable'))}",
        f"  candidate  {_version(s.get('candidate'))}  weight {s.get('weight', 0):g}%",
        f"  message    {s.get('message', '')}",
    ]
    if s.get("sync"):
        lines.append(f"  sync       {s['sync']['message']}")
    rollout = s.get("rollout")
    if rollout:  # a stepped rollout: where it is, what it waits for, the last online verdict
        at = "promoted" if rollout.get("promoted") else (
            f"step {rollout['currentStepIndex'] + 1}/{rollout['steps']} ({rollout['step']})"
            + (" ABORTED" if rollout.get("aborted") else ""))
        lines.append(f"  rollout    {at}; mirror {rollout.get('mirror', 0):g}%, interleave "
                     f"{rollout.get('interleave', 0):g}%" + (f"; waiting for {rollout['waitingFor']}"
                                                              if rollout.get("waitingFor") else ""))
        if (rollout.get("analysis") or {}).get("message"):
            lines.append(f"  online     {rollout['analysis']['message']}")
    if s.get("metrics"):
        checked = s.get("checkedVersion")
        nums = ", ".join(f"{k} {v:.4f}" for k, v in sorted(s["metrics"].items()))
        lines.append(f"  metrics    {checked}: {nums}")
    for g in s.get("gates", []):
        lines.append(f"  gate       {'ok  ' if g['passed'] else 'FAIL'} {g['message']}")
    for d in s.get("drift", []):
        lines.append(f"  drift      {d['detail']}")
    for q in s.get("regressed", []):
        lines.append(f"  regressed  {q['query']} {q['metric']} {q['old']:.3f} -> {q['new']:.3f}  {q['text'][:70]}")
    for c in s.get("conditions", []):
        if c.get("status") == "True":
            lines.append(f"  condition  {c['type']}=True ({c['reason']})")
    if s.get("error"):  # e.g. a damaged sync record under a readable status
        lines.append(f"  error      {s['error']}")
    return "\n".join(lines)
