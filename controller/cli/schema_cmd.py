"""`controller schema`: the JSON Schema of the EmbeddingIndex manifest."""

from __future__ import annotations

import argparse

from controller.cli.common import print_json
from controller.spec.models import EmbeddingIndex


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of the manifest")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print_json(EmbeddingIndex.model_json_schema(by_alias=True))
    return 0
