"""Model change through the engine (SciFact MiniLM-raw -> E5), calibration stored for `max: auto`,
and the drift report: HTML with decodable inline PNGs, Markdown with PNG files, Chromium screenshot."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from controller.checks.drift import REGISTRY
from controller.cli.main import main
from controller.engine.backend import stored_vectors
from controller.engine.reconcile import reconcile_index
from controller.manifest.load import load_manifests
from controller.store.fs import Store
from tests.e2e.test_scifact import scifact_manifest

pytestmark = pytest.mark.scifact

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")


def reconcile(doc: dict, tmp: Path, store: Store, scifact: Path):
    path = tmp / f"{doc['spec']['index']['version']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    [loaded] = load_manifests(path, [scifact])
    return reconcile_index(loaded, store)


@pytest.fixture(scope="module")
def swapped(scifact: Path, tmp_path_factory) -> tuple[Store, dict]:
    """v1 MiniLM without normalisation (raw norms), v2 E5, every registered statistic configured."""
    tmp = tmp_path_factory.mktemp("swap")
    store = Store(tmp / "store")
    every = [{"metric": name} for name in sorted(REGISTRY)]
    v1 = scifact_manifest(scifact, "all-minilm-l6-v2-raw", "v1", [{"metric": "ndcg@10", "min": 0.6}])
    v1["spec"]["model"]["normalize"] = False
    v1["spec"]["checks"]["drift"] = every
    reconcile(v1, tmp, store, scifact)
    v2 = scifact_manifest(scifact, "multilingual-e5-small-q4", "v2", [{"metric": "ndcg@10", "maxDrop": 0.02}])
    v2["spec"]["checks"]["drift"] = every
    result = reconcile(v2, tmp, store, scifact)
    return store, result.status


def test_model_change_flags_every_applicable_statistic(swapped) -> None:
    store, status = swapped
    drift = {d["statistic"]: d for d in status["drift"]}
    assert set(drift) == set(REGISTRY)
    for name, d in drift.items():
        print(f"{name:>16}: {d['detail']}")
    applicable = {n for n, s in REGISTRY.items() if s.space_free}
    for name in applicable:
        assert drift[name]["informative"] and drift[name]["drifted"], drift[name]["detail"]
    for name in ("ksDims", "mmd"):
        assert not drift[name]["informative"] and drift[name]["value"] is None
        assert "refused across fingerprints" in drift[name]["detail"]
        assert "two different models' spaces are unrelated" in drift[name]["detail"]
    assert "per-dimension KS compares coordinates" in drift["ksDims"]["detail"]
    assert status["stable"]["version"] == "v2"  # drift is reported, not gated: E5 is better


def test_calibrate_stores_thresholds_and_auto_uses_them(swapped, tmp_path: Path, capsys) -> None:
    store, _ = swapped
    capsys.readouterr()
    args = ["calibrate", "scifact", "--store", str(store.root), "--version", "v1", "--splits", "20",
            "--metrics", "psi,normShift,cosineShift", "-o", "json"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["version"] == "v1" and record["splits"] == 20 and record["falseAlarm"] == 0.05
    psi = record["statistics"]["psi"]
    print("psi calibrated:", psi)
    assert 0 < psi["nullMedian"] <= psi["threshold"] <= psi["nullMax"] < psi["defaultThreshold"]
    assert psi["effectNull"] is not None and psi["sampleSize"] == 5183 // 2
    assert store.calibration("scifact")["statistics"]["psi"]["threshold"] == psi["threshold"]
    # text output names every statistic with its threshold
    assert main(args[:-2] + ["--no-save"]) == 0
    text = capsys.readouterr().out
    assert "psi" in text and "threshold" in text and "calibration.json" not in text
    # bad input is exit 2 with a sentence
    assert main(["calibrate", "scifact", "--store", str(store.root), "--false-alarm", "2"]) == 2
    assert "--false-alarm must be between 0 and 1" in capsys.readouterr().err


def test_auto_threshold_prefers_the_stored_calibration(swapped) -> None:
    from controller.engine.drift import resolve_threshold

    store, _ = swapped
    store.write_calibration("scifact", {"version": "v1", "falseAlarm": 0.05,
                                        "statistics": {"psi": {"threshold": 0.0123}}})
    ref = stored_vectors(store, "scifact", "v1")
    thr, source = resolve_threshold(store, "scifact", "v1", "psi", "auto", ref)
    assert thr == 0.0123 and "calibration.json" in source
    thr, source = resolve_threshold(store, "scifact", "v2", "psi", "auto", ref)  # other reference: calibrate now
    assert thr != 0.0123 and "calibrated now" in source
    assert resolve_threshold(store, "scifact", "v1", "psi", 0.3, ref) == (0.3, None)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the PNG signature."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def report_html(swapped, tmp_path_factory) -> Path:
    store, _ = swapped
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", "scifact", "--store", str(store.root), "--html", str(out)]) == 0
    return out


def test_html_report_is_self_contained_with_valid_pngs(report_html: Path) -> None:
    text = report_html.read_text()
    parser = _Images()
    parser.feed(text)
    assert len(parser.srcs) >= 5  # norms, PSI per bin, cosines, neighbour overlap, golden metrics
    for src in parser.srcs:
        m = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", src)
        assert m, src[:60]
        w, h = png_size(base64.b64decode(m.group(1), validate=True))
        assert 100 < w < 3000 and 100 < h < 3000
    assert "http://" not in text and "https://" not in text  # nothing fetched from outside
    for needle in ("v1 -&gt; v2", "PSI per bin", "Jaccard@10", "RBO", "ndcg@10", "Most regressed golden queries",
                   "refused across fingerprints"):
        assert needle in text, needle


def test_markdown_report_writes_pngs_next_to_it(swapped, tmp_path: Path) -> None:
    store, _ = swapped
    out = tmp_path / "r" / "report.md"
    out.parent.mkdir()  # --md, like --out, refuses a directory that does not exist
    assert main(["report", "scifact", "--store", str(store.root), "--md", str(out)]) == 0
    text = out.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(links) >= 5
    for link in links:
        png_size((out.parent / link).read_bytes())


def test_report_needs_an_output(swapped, capsys) -> None:
    store, _ = swapped
    assert main(["report", "scifact", "--store", str(store.root)]) == 2
    assert "--html FILE" in capsys.readouterr().err


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium is not installed (/usr/bin/chromium)")
def test_report_renders_in_headless_chromium(report_html: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    script = Path(__file__).resolve().parents[2] / "scripts" / "render_report.sh"
    env = {**os.environ, "CHROMIUM": str(CHROMIUM)}
    subprocess.run(["bash", str(script), str(report_html), str(shot)], check=True, env=env, timeout=120,
                   capture_output=True)
    w, h = png_size(shot.read_bytes())
    assert w >= 800 and h >= 1000
    assert shot.stat().st_size > 50_000  # a blank page compresses to a few kB; images make it large
