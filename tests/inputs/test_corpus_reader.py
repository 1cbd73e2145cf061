"""The fast corpus reader (blocks of bytes straight to orjson) and the careful one give the same corpus or the same error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from controller.errors import InvalidInput
from controller.store import corpus as C

SCIFACT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scifact" / "corpus.jsonl"


def both(path: Path, id_field: str = "id", fields: list[str] | None = None, priority: str | None = None):
    read = C._Fields(id_field, fields or ["title", "text"], priority)
    out = []
    for reader in (C._read_blocks, C._read_checked):
        try:
            out.append(reader(path, read, None))
        except C._Irregular:
            out.append("irregular")
        except InvalidInput as exc:
            out.append(("error", str(exc)))
    return out


CASES = {
    "plain": b'{"id": "a", "title": "T", "text": "x"}\n{"id": 2, "text": "y"}\n',
    "bom, crlf, blank lines": b'\xef\xbb\xbf{"id": "a", "text": "x"}\r\n\r\n   \n{"id": "b", "title": "", "text": "y"}\n',
    "no final newline": b'{"id": "a", "text": "x"}',
    "numbers as text": b'{"id": "a", "title": 1.5, "text": 2}\n',
    "unicode": '{"id": "é", "text": "naïve — 漢字 \\u00e9"}\n'.encode(),
    "duplicate key (last wins)": b'{"id": "a", "id": "b", "text": "x"}\n',
    "duplicate id": b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n',
    "duplicate id after blank lines": b'\n{"id": "a", "text": "x"}\n\n \n{"id": "b", "text": "y"}\n{"id": "a", "text": "z"}\n',
    "duplicate integer id": b'{"id": 7, "text": "x"}\n{"id": "7", "text": "y"}\n',
    "missing id": b'{"text": "x"}\n',
    "empty id": b'{"id": "", "text": "x"}\n',
    "bool id": b'{"id": true, "text": "x"}\n',
    "blank text": b'{"id": "a", "title": " ", "text": "  "}\n',
    "list text": b'{"id": "a", "text": ["x"]}\n',
    "not an object": b'["a"]\n',
    "not JSON": b'{"id": "a", "text": "x"}\n{"id": \n',
    "NaN token": b'{"id": "a", "text": "x", "score": NaN}\n',
    "invalid UTF-8": b'{"id": "a", "text": "\xff"}\n',
    "non-ASCII blank line": '\u00a0\n{"id": "a", "text": "x"}\n'.encode(),
    "huge int": b'{"id": 123456789012345678901234567890, "text": "x"}\n',
}


#: what the fast reader judges itself (the rest it leaves to the careful one, which reads the file again)
JUDGED = {"plain", "bom, crlf, blank lines", "no final newline", "unicode", "duplicate key (last wins)",
          "duplicate id", "duplicate id after blank lines", "duplicate integer id"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_reader_agrees_with_the_careful_one(tmp_path: Path, name: str) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(CASES[name])
    fast, checked = both(path)
    assert checked != "irregular"
    if name in JUDGED:
        assert fast != "irregular", name
    if fast == "irregular":  # read_corpus falls back: the careful reader's result is the answer
        return
    assert fast == checked, name


def test_blocks_number_lines_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blank lines and integer ids in some blocks only; a duplicate in a later block names both file lines."""
    monkeypatch.setattr(C, "BLOCK_BYTES", 64)  # a few lines per block
    lines = [json.dumps({"id": i if i % 7 == 0 else f"d{i}", "text": f"t {i}"}) for i in range(60)]
    lines[10:10] = ["", "  "]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    fields = C._Fields("id", ["text"])
    assert C._read_blocks(path, fields, None) == C._read_checked(path, fields, None)
    path.write_text("\n".join(lines + [json.dumps({"id": "d13", "text": "again"})]) + "\n")
    fast, checked = both(path, fields=["text"])
    assert fast == checked
    assert "at line 63 (first at line 16)" in fast[1]


PRIORITIES = {
    "numbers, one missing": (b'{"id": "a", "text": "x", "p": 3}\n{"id": "b", "text": "y"}\n'
                             b'{"id": "c", "text": "z", "p": -1.5}\n', [3.0, 0.0, -1.5]),
    "a string": (b'{"id": "a", "text": "x", "p": 3}\n\n{"id": "b", "text": "y", "p": "high"}\n',
                 "line 3: priorityField 'p' must be a number (got 'high')"),
    "a bool": (b'{"id": "a", "text": "x", "p": true}\n', "line 1: priorityField 'p' must be a number (got True)"),
    "null": (b'{"id": "a", "text": "x", "p": null}\n{"id": "b", "text": "x", "p": 0}\n', [0.0, 0.0]),
    "a list": (b'{"id": "a", "text": "x", "p": [1]}\n', "line 1: priorityField 'p' must be a number, got a JSON list"),
    "NaN": (b'{"id": "a", "text": "x", "p": NaN}\n', "line 1: priorityField 'p' must be a number (got nan)"),
    "Infinity": (b'{"id": "a", "text": "x", "p": -Infinity}\n',
                 "line 1: priorityField 'p' must be a number (got -inf)"),
}


@pytest.mark.parametrize("name", sorted(PRIORITIES))
def test_priorities_are_read_with_the_corpus(tmp_path: Path, name: str) -> None:
    """spec.reembed.priorityField is read in the same pass (the corpus is read once) and both readers agree."""
    path = tmp_path / "corpus.jsonl"
    content, expected = PRIORITIES[name]
    path.write_bytes(content)
    fast, checked = both(path, fields=["text"], priority="p")
    if fast != "irregular":
        assert fast == checked
    if isinstance(expected, list):
        assert C.read_corpus(path, "id", ["text"], priority_field="p").priorities == expected
        assert C.read_corpus(path, "id", ["text"]).priorities is None
    else:
        assert fast == "irregular"
        with pytest.raises(InvalidInput) as err:
            C.read_corpus(path, "id", ["text"], priority_field="p")
        assert expected in str(err.value) and err.value.field == "spec.reembed.priorityField", str(err.value)


def test_read_corpus_falls_back_and_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(CASES["not JSON"])
    with pytest.raises(InvalidInput, match="line 2 is not valid JSON"):
        C.read_corpus(path, "id", ["text"])
    path.write_bytes(CASES["invalid UTF-8"])
    with pytest.raises(InvalidInput, match="invalid UTF-8 at line 1"):
        C.read_corpus(path, "id", ["text"])


def test_hashes_and_digest_keep_their_definition(tmp_path: Path) -> None:
    """Stores persist these (hashes.json, meta corpus.digest): the definition must not move."""
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(CASES["plain"])
    corpus = C.read_corpus(path, "id", ["title", "text"])
    assert corpus.texts == ["T x", "y"]
    assert corpus.hashes == [hashlib.sha256(t.encode()).hexdigest()[:16] for t in corpus.texts]
    h = hashlib.sha256()
    for doc_id, doc_hash in zip(corpus.ids, corpus.hashes):
        h.update(doc_id.encode() + b"\0" + doc_hash.encode() + b"\n")
    assert corpus.digest == h.hexdigest()[:16]


@pytest.mark.skipif(not SCIFACT.is_file(), reason="SciFact not available")
def test_scifact_same_both_ways() -> None:
    fields = C._Fields("_id", ["title", "text"])
    fast = C._read_blocks(SCIFACT, fields, None)
    assert fast == C._read_checked(SCIFACT, fields, None)
    assert len(fast[0]) == sum(1 for line in SCIFACT.read_bytes().splitlines() if line.strip())
    assert json.loads(SCIFACT.read_bytes().splitlines()[0])["_id"] == fast[0][0]
