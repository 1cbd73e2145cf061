"""One state transition = one atomic record; recovery of interrupted ones and of leftovers.

A transition (verdicts, routing, a journal record, optionally a status) is
first written whole to `<index>/transition.json` with temp + fsync + rename:
that rename is the commit point. It is then applied file by file and removed.
A crash before the rename leaves only a temp file, which recovery discards
(nothing happened); a crash after it leaves the record, which recovery applies
again. Applying is idempotent: files are overwritten with the same content and
the journal record, which carries an id, is appended only if that id is not
in the journal yet.

Recovery runs at the start of every writer, under the store lock, so it never
races a live writer. It also removes what crashed writers leave behind:
`versions/.staging-*` (a half-built version), `versions/.deleting-*` (a version
renamed away for deletion) and `.*.tmp-*` temp files.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from controller.errors import StoreError
from controller.store import atomic

TRANSITION_FILE = "transition.json"
_TMP = re.compile(r"^\..+\.tmp-(\d+)$")


def commit(index_dir: Path, record: dict[str, Any]) -> None:
    """Write the record atomically (the commit point), apply it, then remove it."""
    atomic.write_json(index_dir / TRANSITION_FILE, record)
    apply(index_dir, record)
    atomic.remove_file(index_dir / TRANSITION_FILE)


def apply(index_dir: Path, record: dict[str, Any]) -> None:
    """Idempotent: applying a record twice leaves the same files and one journal record."""
    for version, verdict in (record.get("verdicts") or {}).items():
        path = index_dir / "versions" / version / "verdict.json"
        if path.parent.is_dir() and _current(path) != verdict:
            atomic.write_json(path, verdict)
    if record.get("routing") is not None and _current(index_dir / "routing.json") != record["routing"]:
        atomic.write_json(index_dir / "routing.json", record["routing"])
    if record.get("rollout") is not None and _current(index_dir / "rollout.json") != record["rollout"]:
        atomic.write_json(index_dir / "rollout.json", record["rollout"])
    journal = record.get("journal")
    if journal is not None:
        path = index_dir / "history.jsonl"
        if not any(r.get("id") == journal["id"] for r in atomic.read_lines(path)):
            atomic.append_line(path, journal)
    if record.get("status") is not None and _current(index_dir / "status.json") != record["status"]:
        atomic.write_json(index_dir / "status.json", record["status"])


def _current(path: Path) -> Any:
    """What a file holds now; a damaged file counts as different, so applying the record mends it."""
    try:
        return atomic.read_json(path)
    except StoreError:
        return None


def recover_index(index_dir: Path) -> list[str]:
    """Finish or discard an interrupted transition and remove crash leftovers; say what was done."""
    done: list[str] = []
    pending = index_dir / TRANSITION_FILE
    if pending.is_file():
        try:
            record = json.loads(pending.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None  # cannot happen with rename-into-place; never apply a record we cannot read
        if isinstance(record, dict):
            apply(index_dir, record)
            done.append(f"completed the interrupted transition {record.get('id')}")
        else:
            done.append(f"discarded the unreadable transition record {pending}")
        atomic.remove_file(pending)
    versions = index_dir / "versions"
    if versions.is_dir():
        for entry in sorted(versions.iterdir()):
            if entry.name.startswith((".staging-", ".deleting-")):
                atomic.remove_tree(entry)
                done.append(f"removed the leftover {entry}")
            elif entry.is_dir() and not entry.name.startswith("."):
                done += _remove_temp_files(entry)
    done += _remove_temp_files(index_dir)
    return done


def recover_root(indexes_dir: Path) -> list[str]:
    """Recover every index, and remove indexes renamed away for deletion."""
    if not indexes_dir.is_dir():
        return []
    done: list[str] = []
    for entry in sorted(indexes_dir.iterdir()):
        if entry.name.startswith(".deleting-"):
            atomic.remove_tree(entry)
            done.append(f"removed the leftover {entry}")
        elif entry.is_dir() and not entry.name.startswith("."):
            done += recover_index(entry)
    return done


def _remove_temp_files(directory: Path) -> list[str]:
    """Temp files of dead processes (or of this one: under the lock nothing of ours is mid-write).

    A live foreign pid may be a lock-free writer (the query reservoir, sync
    state) in the middle of a write: its file is left alone.
    """
    done = []
    for entry in directory.iterdir():
        match = _TMP.match(entry.name)
        if match is None or not entry.is_file():
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and _alive(pid):
            continue
        atomic.remove_file(entry)
        done.append(f"removed the temp file {entry}")
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
