"""`get -o yaml`, `status -o yaml` and `schema -o yaml` parse with yaml.safe_load and keep their shape.

Volatile values (times, ages) are masked and floats rounded before comparing with
tests/cli/golden/*.yaml. After an intended change of shape, regenerate with
`UPDATE_GOLDEN=1 pytest tests/cli/test_output_golden.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cli.main import main
from tests.helpers import V2_OPTIONS, manifest, write_manifest

GOLDEN = Path(__file__).resolve().parent / "golden"
VOLATILE = {"created", "age", "lastTransitionTime", "time", "since"}
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9@]*$|^[A-Z][A-Za-z]*$")


def masked(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: ("<masked>" if k in VOLATILE and v is not None else masked(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [masked(v) for v in node]
    if isinstance(node, float):
        return round(node, 4)
    return node


def keys(node: Any, prefix: str = "") -> list[str]:
    """Every key path of the document (to check the camelCase rule)."""
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in [key, *keys(v, key)]]
    if isinstance(node, list):
        return [k for v in node for k in keys(v, prefix)]
    return []


def yaml_of(capsys, *argv: str) -> Any:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return yaml.safe_load(capsys.readouterr().out)


def compare(name: str, doc: Any) -> None:
    path = GOLDEN / f"{name}.yaml"
    got = masked(doc)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(yaml.safe_dump(got, sort_keys=False, width=120))
    assert got == yaml.safe_load(path.read_text()), f"{name}: shape changed; see the module docstring"


def test_get_yaml(built, capsys):
    _, store = built
    rows = yaml_of(capsys, "get", "-o", "yaml", "--store", str(store))
    assert isinstance(rows, list) and rows[0]["name"] == "qs"
    one = yaml_of(capsys, "get", "qs", "-o", "yaml", "--store", str(store))
    assert isinstance(one, dict) and one == rows[0]
    compare("get", rows)


def test_status_yaml(built, capsys):
    _, store = built
    listed = yaml_of(capsys, "status", "-o", "yaml", "--store", str(store))
    one = yaml_of(capsys, "status", "qs", "-o", "yaml", "--store", str(store))
    assert isinstance(listed, list) and isinstance(one, dict) and listed == [one]
    compare("status", one)


def test_schema_yaml_equals_the_json_schema(capsys):
    doc = yaml_of(capsys, "schema", "-o", "yaml")
    capsys.readouterr()
    assert main(["schema"]) == 0
    assert doc == json.loads(capsys.readouterr().out)
    compare("schema", doc)


@pytest.mark.parametrize("verb", ["get", "status", "history qs"])
def test_json_keys_are_camel_case(built, capsys, verb):
    _, store = built
    capsys.readouterr()
    assert main([*verb.split(), "-o", "json", "--store", str(store)]) == 0
    doc = json.loads(capsys.readouterr().out)
    bad = sorted({k for k in keys(doc) if not CAMEL.match(k)})
    assert not bad, f"snake_case keys in `{verb} -o json`: {bad}"


def test_plan_json_keys_are_camel_case(built, capsys):
    ws, store = built
    v2 = write_manifest(ws, manifest("v2", V2_OPTIONS, pct=25), "v2-plan.yaml")
    capsys.readouterr()
    assert main(["reconcile", str(v2), "--store", str(store), "--dry-run", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert any(a.get("ifGatesPass") for a in doc["indexes"][0]["plan"]["actions"])
    assert not sorted({k for k in keys(doc) if not CAMEL.match(k)})
