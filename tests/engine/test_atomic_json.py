"""atomic.write_json keeps json.dumps(indent=2, sort_keys=True) byte for byte on its fast path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.store import atomic


@pytest.mark.parametrize("payload", [["d1", "b\"c", "é\u2028x", "\x00\n", ""], [], ["only"], [1, "a"], ["a", None],
                                     {"b": 1, "a": ["x", "y"]}])
def test_write_json_text_is_unchanged(tmp_path: Path, payload) -> None:
    path = tmp_path / "f.json"
    atomic.write_json(path, payload)
    assert path.read_text() == json.dumps(payload, indent=2, sort_keys=True) + "\n"
    assert json.loads(path.read_text()) == payload
