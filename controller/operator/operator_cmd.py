"""`controller operator`: run the Kubernetes operator for EmbeddingIndex resources (kopf)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from controller.cliargs import add_verb, extra_required
from controller.errors import InvalidInput
from controller.paths import STORE_ENV

DATA_DIR_ENV = "CONTROLLER_DATA_DIR"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "operator", help="run the Kubernetes operator (watches EmbeddingIndex resources)",
                 description="Reconcile EmbeddingIndex custom resources with the same loop as `reconcile`.",
                 examples="""
                     controller operator --namespace search --store /var/lib/eic --data-dir /data
                     controller operator -A --leader-elect --health-port 8080 --metrics-port 9090
                 """)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch NS (repeatable or comma-separated; default: the current namespace)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument("--store", metavar="DIR", help=f"store directory (default: ${STORE_ENV})")
    p.add_argument("--data-dir", metavar="DIR", help=(
        f"directory the paths in a resource resolve against (default: ${DATA_DIR_ENV}, else the current one)"))
    p.add_argument("--data-root", action="append", default=[], metavar="DIR",
                   help="also allow paths under DIR (repeatable; also $CONTROLLER_DATA_ROOTS)")
    p.add_argument("--interval", type=float, default=300.0, metavar="SECONDS",
                   help="re-reconcile every index this often, also without events (default: 300)")
    p.add_argument("--on-delete", choices=("retain", "delete"), default="retain",
                   help="what deleting a resource does to its built versions when it has no "
                        "indexops.dev/on-delete annotation (default: retain)")
    p.add_argument("--health-port", type=int, metavar="PORT", help="serve /healthz and /readyz on PORT")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus /metrics on PORT")
    p.add_argument("--log-format", choices=("json", "text"), default="json", help="log format (default: json)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.add_argument("--leader-elect", action="store_true",
                   help="run only while holding a coordination.k8s.io Lease (for more than one replica)")
    p.add_argument("--lease-name", default="embedding-index-controller", help="name of the Lease")
    p.add_argument("--lease-namespace", help="namespace of the Lease (default: the first watched namespace)")
    p.add_argument("--lease-duration", type=int, default=15, metavar="SECONDS", help="lease duration (15)")
    p.add_argument("--renew-deadline", type=float, default=10.0, metavar="SECONDS",
                   help="step down when the lease could not be renewed for this long (10)")
    jobs = p.add_argument_group("embedding Jobs (spec.reembed; without --job-image the reconcile embeds)")
    jobs.add_argument("--job-image", metavar="IMAGE", help="image of the embedding Job pods (the operator's own)")
    jobs.add_argument("--job-store-claim", metavar="PVC", help="claim of the shared store volume, mounted at --store")
    jobs.add_argument("--job-data-claim", metavar="PVC", help="claim of the data volume, mounted at --data-dir")
    jobs.add_argument("--job-service-account", metavar="NAME", help="service account of the Job pods")
    p.set_defaults(run=run)


def namespaces_of(values: list[str]) -> tuple[str, ...]:
    out = [ns.strip() for value in values for ns in value.split(",") if ns.strip()]
    return tuple(dict.fromkeys(out))


def current_namespace() -> str:
    """The pod's namespace in a cluster, else `default` (kubectl's fallback)."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.is_file() else "default"


def job_runtime(args: argparse.Namespace, api: object, store: Path, data_dir: Path) -> tuple | None:
    if not args.job_image:
        return None
    if not args.job_store_claim:
        raise InvalidInput("embedding Jobs need the store's claim to mount: pass --job-store-claim",
                           field="--job-store-claim")
    from controller.operator.jobs import JobSettings, KubeJobApi

    return KubeJobApi(api), JobSettings(image=args.job_image, store_claim=args.job_store_claim,
                                        store_mount=store, data_mount=data_dir, data_claim=args.job_data_claim,
                                        service_account=args.job_service_account)


def check_positive(flag: str, value: float | None) -> None:
    """A duration of 0 or less (or nan/inf) would make a hot loop or never fire: refuse it at start."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InvalidInput("must be a number of seconds greater than 0", field=flag, value=value)


def check_port(flag: str, value: int | None) -> None:
    """A port outside 0..65535 failed deep in the socket layer with an OverflowError traceback."""
    if value is not None and not 0 <= value <= 65535:
        raise InvalidInput("must be a TCP port from 0 to 65535", field=flag, value=value)


def check_flags(args: argparse.Namespace) -> None:
    """Range checks on the numeric flags, before anything starts: exit 2 naming the flag."""
    check_positive("--interval", args.interval)
    check_positive("--lease-duration", args.lease_duration)
    check_positive("--renew-deadline", args.renew_deadline)
    check_port("--health-port", args.health_port)
    check_port("--metrics-port", args.metrics_port)
    if args.lease_duration <= args.renew_deadline:
        raise InvalidInput(f"--lease-duration ({args.lease_duration}) must exceed --renew-deadline "
                           f"({args.renew_deadline:g}) so a leader steps down before another takes over",
                           field="--lease-duration", value=args.lease_duration)


def run(args: argparse.Namespace) -> int:
    check_flags(args)
    with extra_required("operator", "operator"):  # kopf, kubernetes, prometheus-client
        from controller.operator.handlers import OperatorConfig, Runtime
        from controller.operator.main import OperatorOptions, kube_api_client, run as run_operator, setup_logging
        from controller.operator.routing import KubePublisher
        from controller.operator.statuswriter import KubeStatusWriter

    store = args.store or os.environ.get(STORE_ENV)
    if not store:
        raise InvalidInput(f"the operator needs a store directory: pass --store DIR or set ${STORE_ENV}",
                           field="--store")
    data_dir = Path(args.data_dir or os.environ.get(DATA_DIR_ENV) or Path.cwd())
    if not data_dir.is_dir():
        raise InvalidInput(f"data directory {str(data_dir)!r} does not exist; pass --data-dir or set "
                           f"${DATA_DIR_ENV}", field="--data-dir", value=str(data_dir))
    namespaces = () if args.all_namespaces else (namespaces_of(args.namespace) or (current_namespace(),))
    setup_logging(args.log_format, args.verbose)
    config = OperatorConfig(store_root=Path(store), data_dir=data_dir,
                            data_roots=tuple(Path(p) for p in args.data_root), interval=args.interval,
                            on_delete_default=args.on_delete)
    api = kube_api_client()
    rt = Runtime(config=config, publisher=KubePublisher(api), status_writer=KubeStatusWriter(api),
                 jobs=job_runtime(args, api, Path(store), data_dir))
    options = OperatorOptions(namespaces=namespaces, all_namespaces=args.all_namespaces,
                              health_port=args.health_port, metrics_port=args.metrics_port,
                              leader_elect=args.leader_elect, lease_name=args.lease_name,
                              lease_namespace=args.lease_namespace or (namespaces[0] if namespaces
                                                                       else current_namespace()),
                              lease_duration=args.lease_duration, renew_deadline=args.renew_deadline)
    return run_operator(rt, options)
