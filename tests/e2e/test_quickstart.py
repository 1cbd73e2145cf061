"""The quickstart walk-through from the README, in process, on a fresh store."""

from __future__ import annotations

import json
from pathlib import Path

from controller.cli.main import main

QS = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


def run(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_quickstart_ends_on_v2_after_v3_rolled_back(tmp_path, capsys):
    store = ["--store", str(tmp_path / "store")]
    assert run(capsys, "reconcile", str(QS / "v1.yaml"), *store)[0] == 0
    code, out = run(capsys, "reconcile", str(QS / "v2-canary.yaml"), "--dry-run", "--detailed-exitcode", *store)
    assert code == 2 and "build" in out and "25%" in out
    assert run(capsys, "reconcile", str(QS / "v2-canary.yaml"), *store)[0] == 0
    code, out = run(capsys, "status", "quickstart", "-o", "json", *store)
    s = json.loads(out)
    assert (s["stable"]["version"], s["candidate"]["version"], s["weight"]) == ("v1", "v2", 25)
    code, out = run(capsys, "query", "quickstart", "vitamin D", "--key", "user-1", "-o", "json", *store)
    served = json.loads(out)["version"]
    for _ in range(3):  # sticky: the same key always hits the same version
        assert json.loads(run(capsys, "query", "quickstart", "vitamin D", "--key", "user-1", "-o", "json",
                              *store)[1])["version"] == served
    assert run(capsys, "reconcile", str(QS / "v2.yaml"), *store)[0] == 0
    assert run(capsys, "reconcile", str(QS / "v3.yaml"), *store)[0] == 3  # rolled back: exit 3
    s = json.loads(run(capsys, "status", "quickstart", "-o", "json", *store)[1])
    assert s["phase"] == "RolledBack" and s["stable"]["version"] == "v2" and s["candidate"] is None
    assert any(not g["passed"] and "ndcg@10" in g["message"] for g in s["gates"])
    assert run(capsys, "rollback", "quickstart", *store)[0] == 0
    assert json.loads(run(capsys, "status", "quickstart", "-o", "json", *store)[1])["stable"]["version"] == "v1"
    assert run(capsys, "rollback", "quickstart", "--to", "v2", *store)[0] == 0
    s = json.loads(run(capsys, "status", "quickstart", "-o", "json", *store)[1])
    assert s["stable"]["version"] == "v2"
    history = json.loads(run(capsys, "history", "quickstart", "-o", "json", *store)[1])
    assert [r["reason"] for r in history["journal"]] == [
        "FirstVersion", "WeightChanged", "RolloutComplete", "GateFailed", "ManualRollback", "ManualRollback"]


def test_schema_is_json_schema(capsys):
    code, out = run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0 and schema["title"] == "EmbeddingIndex" and "spec" in schema["properties"]


def test_a_missing_extra_is_a_sentence_not_a_traceback():
    import pytest

    from controller.cliargs import extra_required
    from controller.errors import ControllerError

    with pytest.raises(ControllerError, match=r"pip install 'embedding-index-controller\[report\]'"):
        with extra_required("report", "report"):
            raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
