#!/usr/bin/env bash
# The quickstart, end to end: v1 -> dry-run v2 -> v2 at 25% -> v2 at 100% ->
# v3 rolled back on its golden numbers (exit 3) -> manual rollback and roll forward.
# Offline; uses a fresh store in out/quickstart-store (without CONTROLLER_STORE or
# --store, every verb uses ~/.local/state/embedding-index-controller).
set -euo pipefail
cd "$(dirname "$0")"
export CONTROLLER_STORE="${CONTROLLER_STORE:-../../out/quickstart-store}"
rm -rf "$CONTROLLER_STORE"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step controller reconcile v1.yaml
step controller reconcile v2-canary.yaml --dry-run
set +e
controller reconcile v2-canary.yaml --dry-run --detailed-exitcode >/dev/null
echo "(--detailed-exitcode: $? = changes pending)"
set -e
step controller reconcile v2-canary.yaml
step controller wait quickstart --for=condition=Progressing --timeout 30s
step controller get
step controller query quickstart "vitamin D deficiency and bone health" -k 3 --key alice
step controller reconcile v2.yaml
step controller wait quickstart --for=phase=Healthy --timeout 30s
set +e
step controller reconcile v3.yaml
code=$?
set -e
echo "(exit $code: v3 failed its gates and was rolled back)"
test "$code" = 3
step controller get
step controller status quickstart
step controller rollback quickstart
step controller rollback quickstart --to v2
step controller history quickstart
step controller reconcile v2.yaml --dry-run --detailed-exitcode

alias_now=$(controller status quickstart -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stable"]["version"])')
printf '\nquickstart: alias now serves %s (v3 was rolled back)\n' "$alias_now"
test "$alias_now" = v2
