"""`controller promote NAME [--full]`, `controller abort NAME`, `controller retry NAME`: drive a stepped rollout.

The three verbs live here because they share their arguments and their output: each applies one
command to the step machine from the state in the store (no manifest needed), under the store
lock, journals the transitions, and prints the index's new rollout position. Exit codes: 0 applied;
2 the command does not apply (no stepped rollout, already promoted, aborted, not aborted) or bad
input; 1 an error (e.g. the store lock timed out).
"""

from __future__ import annotations

import argparse

from controller.cliargs import (add_lock_timeout_arg, add_output_arg, add_store_arg, add_verb, add_webhook_args,
                                emit, resolve_store, stores_into)

_HELP = {
    "promote": ("skip the current rollout step, or with --full all of them",
                "Skip the current step of a stepped rollout (a pause, an analysis, an interleave test) and run "
                "the following ones; with --full skip every remaining step: the alias switches to the "
                "candidate (Argo Rollouts' promote / promote --full)."),
    "abort": ("abort a stepped rollout: the candidate's weight goes to 0",
              "Abort a stepped rollout: weight, mirror and interleave shares go back to 0 and the alias "
              "stays on stable. It stays aborted until `controller retry` or a manifest change."),
    "retry": ("start an aborted stepped rollout again from its first step",
              "Start an aborted stepped rollout again from its first step."),
}


def register(sub: argparse._SubParsersAction) -> None:
    for verb, (short, description) in _HELP.items():
        p = add_verb(sub, verb, help=short, description=description, examples=f"""
                     controller {verb} scifact{' --full' if verb == 'promote' else ''}
                     controller {verb} scifact -o json
                 """)
        p.add_argument("name", help="index name")
        if verb == "promote":
            p.add_argument("--full", action="store_true", help="skip every remaining step and switch the alias")
        add_output_arg(p)
        add_store_arg(p)
        add_lock_timeout_arg(p)
        add_webhook_args(p)
        p.set_defaults(run=run, command=verb)


def run(args: argparse.Namespace) -> int:
    import controller as api
    from controller.engine.notify import make_notifier

    store = resolve_store(args)
    notifier = make_notifier(store.root, args.webhook, allow_private=args.allow_private_webhooks)
    kwargs = {"lock_timeout": args.lock_timeout, "notify": notifier}
    try:
        if args.command == "promote":
            status = api.promote(args.name, store, full=args.full, **kwargs)
        else:
            status = getattr(api, args.command)(args.name, store, **kwargs)
    finally:
        notifier.close()
    if not emit(status, args.output):
        print(render(args.name, status))
        stores_into(store)
    return 0


def render(name: str, status: dict) -> str:
    rollout = status.get("rollout") or {}
    if rollout.get("promoted"):
        where = f"promoted: {rollout.get('version')} is stable"
    elif rollout.get("aborted"):
        where = f"aborted at step {rollout['currentStepIndex'] + 1}/{rollout['steps']}"
    else:
        where = (f"step {rollout.get('currentStepIndex', 0) + 1}/{rollout.get('steps')} ({rollout.get('step')}), "
                 f"waiting for {rollout.get('waitingFor') or 'nothing'}")
    return (f"{name}: {status.get('phase')}, {where}; weight {status.get('weight', 0):g}%\n"
            f"  {rollout.get('message', '')}")
