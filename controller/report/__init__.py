"""Drift reports: gather numbers from the store (data.py), draw and write them (render.py)."""

from .data import ReportData, gather
from .render import render_html, render_markdown

__all__ = ["ReportData", "gather", "render_html", "render_markdown"]
