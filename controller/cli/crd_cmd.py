"""`controller crd`: the EmbeddingIndex CustomResourceDefinition, generated from the models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.cliargs import add_verb, print_json
from controller.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "crd", help="print the EmbeddingIndex CustomResourceDefinition",
                 description=("The CustomResourceDefinition generated from the manifest models, on stdout "
                              "(-o yaml, the default, or -o json); --file FILE writes it to a file instead."),
                 examples="""
                     controller crd | kubectl apply -f -
                     controller crd -o json | jq .spec.versions[0].name
                     controller crd --file charts/embedding-index-controller/crds/embeddingindexes.indexops.dev.yaml
                 """)
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml",
                   help="output format: yaml|json (default: yaml)")
    p.add_argument("--file", type=Path, metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from controller.manifest.crd import crd, render_yaml

    text = render_yaml() if args.output == "yaml" else json.dumps(crd(), indent=2) + "\n"
    if args.file is None:
        if args.output == "json":
            print_json(crd())
        else:
            sys.stdout.write(text)
        return 0
    if args.file.is_dir():
        raise InvalidInput(f"--file {args.file} is a directory; name the file to write", field="--file",
                           value=str(args.file))
    args.file.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.file.with_name(f".{args.file.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(args.file)  # never a half-written CRD
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {args.file}", file=sys.stderr)
    return 0
