"""`controller schema`: the JSON Schema of the EmbeddingIndex manifest (or a Markdown field table)."""

from __future__ import annotations

import argparse

from controller.cli.common import print_json
from controller.manifest.models import EmbeddingIndex
from controller.manifest.reference import markdown_reference


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of the manifest")
    p.add_argument("--format", choices=("json", "markdown"), default="json",
                   help="json: JSON Schema (default); markdown: the field reference table of the README")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "markdown":
        print(markdown_reference())
    else:
        print_json(EmbeddingIndex.model_json_schema(by_alias=True))
    return 0
