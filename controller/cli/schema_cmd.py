"""`controller schema`: the JSON Schema of the EmbeddingIndex manifest (or a Markdown field table)."""

from __future__ import annotations

import argparse

from controller.cliargs import add_verb, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "schema", help="print the JSON Schema of the manifest (or its field table)",
                 description=("The JSON Schema of an EmbeddingIndex manifest: -o json (default) or -o yaml; "
                              "-o markdown prints the field reference table of the README."),
                 examples="""
                     controller schema > embeddingindex.schema.json
                     controller schema -o yaml
                     controller schema -o markdown
                 """)
    p.add_argument("-o", "--output", choices=("json", "yaml", "markdown"), default="json",
                   help="output format: json|yaml|markdown (default: json)")
    p.add_argument("--format", dest="output", choices=("json", "yaml", "markdown"),
                   help="same as -o (kept for scripts written before -o)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.output == "markdown":
        from controller.manifest.reference import markdown_reference

        print(markdown_reference())
        return 0
    from controller.manifest.models import EmbeddingIndex

    emit(EmbeddingIndex.model_json_schema(by_alias=True), args.output)
    return 0
