"""`controller report NAME --html out.html | --md out.md`: drift and quality of two versions, with plots."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from controller.cli.reconcile_cmd import check_out
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
    # str, not Path: Path("") is ".", and an empty value must be refused as empty
    p.add_argument("--html", metavar="FILE", help="write one self-contained HTML file")
    p.add_argument("--md", metavar="FILE", help="write Markdown, PNGs in FILE_files/ next to it")
    p.add_argument("--old", help="old version (default: the baseline the new one was checked against, else stable)")
    p.add_argument("--new", help="new version (default: the candidate, else the last checked version)")
    p.add_argument("-k", type=int, default=10, help="depth of the neighbour lists compared (default 10)")
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.html is None and args.md is None:
        raise InvalidInput("say where to write the report: --html FILE and/or --md FILE", field="--html")
    if args.k < 1:
        raise InvalidInput(f"-k must be a positive integer, got {args.k}", field="-k", value=args.k)
    # every destination before any work: a bad --md must not cost the whole report, nor leave --html written
    html = _destination(args.html, "--html", "report.html")
    md = _destination(args.md, "--md", "report.md")
    with extra_required("report", "report"):  # matplotlib (a second to import: the checks above come first)
        from controller.report import gather, render_html, render_markdown
        from controller.report.render import assets_dir

    if md is not None:
        _check_assets(md, assets_dir(md), html, args.md)
    data = gather(resolve_store(args), args.name, old=args.old, new=args.new, k=args.k)
    if html is not None:
        print(f"wrote {render_html(data, html)}")
    if md is not None:
        print(f"wrote {render_markdown(data, md)}")
    return 0


def _destination(raw: str | None, flag: str, example: str) -> Path | None:
    """--html or --md checked as --out is: a regular file (or nothing yet) in a directory that exists."""
    return None if raw is None else check_out(raw, flag, instead=None, example=example)


def _check_assets(md: Path, assets: Path, html: Path | None, raw: str) -> None:
    """The Markdown's PNG directory must be a directory (or not exist yet), and neither output may be the
    other's file: the second write would replace the first, or fail once the report is drawn."""
    if os.path.lexists(assets) and not assets.is_dir():
        raise InvalidInput(f"its images go to {str(assets)!r}, which exists and is not a directory",
                           field="--md", value=raw)
    if html is not None and os.path.abspath(html) in (os.path.abspath(md), os.path.abspath(assets)):
        raise InvalidInput(f"--html and --md need separate destinations; --html is {str(html)!r}",
                           field="--md", value=raw)
