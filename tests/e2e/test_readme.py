"""The README's manifest reference is the one generated from the models."""

from __future__ import annotations

from pathlib import Path

from controller.manifest.reference import BEGIN, END, markdown_reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_manifest_reference_matches_the_models():
    text = README.read_text()
    embedded = text.split(BEGIN)[1].split(END)[0].strip()
    assert embedded == markdown_reference().strip(), (
        "README manifest reference is stale: regenerate with `controller schema -o markdown`")
