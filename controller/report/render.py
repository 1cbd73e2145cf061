"""Drawing a ReportData: matplotlib figures (Agg, no display) as PNG bytes, one HTML or Markdown file.

Why inline base64 PNGs in HTML: the report is one self-contained file that can
be attached to a ticket or a pull request and opened offline. The Markdown
variant writes the PNGs next to it (<stem>_files/) because most Markdown
viewers do not render data URIs.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never try to open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from controller.report.data import ReportData  # noqa: E402
from controller.store import atomic  # noqa: E402

OLD_COLOR, NEW_COLOR = "#4c72b0", "#dd8452"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _overlay(ax, a: np.ndarray, b: np.ndarray, labels: tuple[str, str], xlabel: str) -> None:
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 50)
    ax.hist(a, bins=bins, density=True, alpha=0.55, color=OLD_COLOR, label=labels[0])
    ax.hist(b, bins=bins, density=True, alpha=0.55, color=NEW_COLOR, label=labels[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()


def figures(d: ReportData) -> dict[str, tuple[str, bytes]]:
    """name -> (caption, PNG bytes)."""
    labels = (f"{d.old} (old)", f"{d.new} (new)")
    out: dict[str, tuple[str, bytes]] = {}
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    _overlay(ax, d.norms[0], d.norms[1], labels, "row L2 norm")
    ax.set_title("Norm distribution")
    out["norms"] = ("Row norms, old vs new (shared bins)", _png(fig))
    if d.psi_bins is not None:
        p = d.psi_bins
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 3.4))
        x = np.arange(len(p["reference"]))
        ax1.bar(x - 0.2, p["reference"], 0.4, color=OLD_COLOR, label=labels[0])
        ax1.bar(x + 0.2, p["current"], 0.4, color=NEW_COLOR, label=labels[1])
        ax1.set_xlabel("bin (reference deciles of the norm)")
        ax1.set_ylabel("share of rows")
        ax1.legend()
        ax2.bar(x, p["terms"], color="#55a868")
        ax2.set_xlabel("bin")
        ax2.set_ylabel("PSI term (cur - ref) ln(cur/ref)")
        ax2.set_title(f"PSI {p['psi']:.4f}")
        out["psi"] = ("PSI per bin on reference-decile bins shared by both versions", _png(fig))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 3.4))
    _overlay(ax1, d.centroid_cosines[0], d.centroid_cosines[1], labels, "cosine to own centroid")
    ax1.set_title("Cosine to centroid")
    _overlay(ax2, d.pair_cosines[0], d.pair_cosines[1], labels, "cosine of random pairs")
    ax2.set_title("Random-pair cosine")
    out["cosines"] = ("Cosine-similarity distributions, each within its own version's space", _png(fig))
    if d.overlap is not None:
        o = d.overlap
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        bins = np.linspace(0, 1, 21)
        ax.hist(o["perQueryJaccard"], bins=bins, alpha=0.6, label=f"Jaccard@{o['k']} (mean {o['jaccard']:.3f})")
        ax.hist(o["perQueryRbo"], bins=bins, alpha=0.6, label=f"RBO p={o['p']} (mean {o['rbo']:.3f})")
        ax.set_xlabel("agreement of top-k lists per golden query")
        ax.set_ylabel("queries")
        ax.legend()
        out["overlap"] = (f"Neighbour overlap of {o['queries']} golden queries, {d.old} vs {d.new}", _png(fig))
    if d.metrics:
        names = sorted({m for v in d.metrics.values() for m in v})
        fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(names)), 3.4))
        x = np.arange(len(names))
        for i, (version, color) in enumerate(((d.old, OLD_COLOR), (d.new, NEW_COLOR))):
            vals = [d.metrics.get(version, {}).get(m, np.nan) for m in names]
            ax.bar(x + (i - 0.5) * 0.4, vals, 0.4, color=color, label=version)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.legend()
        ax.set_title("Golden-set metrics per version")
        out["metrics"] = ("Golden metrics per version", _png(fig))
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def tables(d: ReportData) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by both renderers."""
    out = []
    versions = [
        [v, m["fingerprint"]["provider"] + "/" + m["fingerprint"]["name"] + "@" + m["fingerprint"]["version"],
         m["index"]["factory"], str(m["corpus"]["documents"]), m["created"]]
        for v, m in ((d.old, d.old_meta), (d.new, d.new_meta))]
    out.append(("Versions", ["version", "model", "factory", "documents", "created"], versions))
    if d.drift:
        out.append(("Drift statistics (from the check of the new version)",
                    ["statistic", "value", "threshold", "drifted", "informative", "detail"],
                    [[r["statistic"], _fmt(r["value"]), _fmt(r["threshold"]), str(r["drifted"]),
                      str(r["informative"]), r["detail"]] for r in d.drift]))
    if d.overlap is not None:
        o = d.overlap
        out.append(("Neighbour overlap", ["queries", "k", f"Jaccard@{o['k']}", f"RBO (p={o['p']})"],
                    [[str(o["queries"]), str(o["k"]), f"{o['jaccard']:.4f}", f"{o['rbo']:.4f}"]]))
    if d.metrics:
        names = sorted({m for v in d.metrics.values() for m in v})
        rows = []
        for m in names:
            a, b = d.metrics.get(d.old, {}).get(m), d.metrics.get(d.new, {}).get(m)
            delta = None if a is None or b is None else b - a
            rows.append([m, _fmt(a), _fmt(b), _fmt(delta)])
        out.append(("Golden metrics", ["metric", d.old, d.new, "new - old"], rows))
    if d.gates:
        out.append(("Gates", ["metric", "passed", "message"],
                    [[g["metric"], str(g["passed"]), g["message"]] for g in d.gates]))
    if d.regressed:
        out.append(("Most regressed golden queries", ["query", "metric", "old", "new", "text"],
                    [[q["query"], q["metric"], _fmt(q["old"]), _fmt(q["new"]), q.get("text", "")[:120]]
                     for q in d.regressed]))
    return out


def _title(d: ReportData) -> str:
    return f"Drift report: {d.name}, {d.old} -> {d.new}"


def render_html(d: ReportData, path: Path) -> Path:
    """One self-contained HTML file: images are inline base64 PNG data URIs."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(_title(d))}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
             "th{background:#f3f3f3}figure{margin:1.5em 0}img{max-width:100%}</style></head><body>",
             f"<h1>{e(_title(d))}</h1>"]
    for note in d.notes:
        parts.append(f"<p><em>{e(note)}</em></p>")
    for title, header, rows in tables(d):
        parts.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    for key, (caption, png) in figures(d).items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure id='{key}'><img alt='{e(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    # atomic: a full disk or a crash leaves the previous report or none, never a truncated one
    atomic.write_bytes(path, "\n".join(parts).encode("utf-8"))
    return path


def render_markdown(d: ReportData, path: Path) -> Path:
    """Markdown with PNGs written to <stem>_files/ next to it (each file atomically, the Markdown last)."""
    assets = assets_dir(path)

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"# {_title(d)}", ""]
    lines += [f"*{n}*\n" for n in d.notes]
    for title, header, rows in tables(d):
        lines += [f"## {title}", "", "| " + " | ".join(cell(h) for h in header) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
        lines.append("")
    for key, (caption, png) in figures(d).items():
        atomic.write_bytes(assets / f"{key}.png", png)  # creates <stem>_files/ on the first one
        lines += [f"![{caption}]({assets.name}/{key}.png)", "", f"*{caption}*", ""]
    atomic.write_bytes(path, "\n".join(lines).encode("utf-8"))
    return path


def assets_dir(markdown: Path) -> Path:
    """Where render_markdown puts the PNGs of ``markdown``: <stem>_files/ next to it."""
    return markdown.parent / f"{markdown.stem}_files"
