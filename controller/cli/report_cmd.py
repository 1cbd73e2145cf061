"""`controller report NAME --html out.html | --md out.md`: drift and quality of two versions, with plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.cliargs import add_store_arg, add_verb, extra_required, resolve_store
from controller.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "report",
                 help="drift report (norms, PSI per bin, cosines, neighbour overlap, golden metrics)",
                 examples="""
                     controller report quickstart --html report.html
                     controller report quickstart --md report.md --old v1 --new v2
                 """)
    p.add_argument("name", help="index name")
    p.add_argument("--html", type=Path, metavar="FILE", help="write one self-contained HTML file")
    p.add_argument("--md", type=Path, metavar="FILE", help="write Markdown, PNGs in FILE_files/ next to it")
    p.add_argument("--old", help="old version (default: the baseline the new one was checked against, else stable)")
    p.add_argument("--new", help="new version (default: the candidate, else the last checked version)")
    p.add_argument("-k", type=int, default=10, help="depth of the neighbour lists compared (default 10)")
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.html and not args.md:
        raise InvalidInput("say where to write the report: --html FILE and/or --md FILE", field="--html")
    if args.k < 1:
        raise InvalidInput(f"-k must be a positive integer, got {args.k}", field="-k", value=args.k)
    with extra_required("report", "report"):  # matplotlib
        from controller.report import gather, render_html, render_markdown

    data = gather(resolve_store(args), args.name, old=args.old, new=args.new, k=args.k)
    if args.html:
        print(f"wrote {render_html(data, args.html)}")
    if args.md:
        print(f"wrote {render_markdown(data, args.md)}")
    return 0
