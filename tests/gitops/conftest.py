"""Fixtures for GitOps tests: real git repositories made with the git CLI, quickstart data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = REPO_ROOT / "examples" / "quickstart"

if shutil.which("git") is None:  # pragma: no cover - the image has git
    pytest.skip("git is not installed", allow_module_level=True)


def manifest(version: str = "v1", percentage: float = 100, *, broken: bool = False,
             annotations: dict[str, str] | None = None) -> str:
    """A quickstart manifest: v1 (word unigrams), v2 (adds char n-grams), v3 (64 buckets, fails gates)."""
    base = yaml.safe_load((QUICKSTART / ("v2.yaml" if version == "v2" else f"{version}.yaml")).read_text())
    base["spec"]["rollout"]["percentage"] = "lots" if broken else percentage
    if annotations:
        base["metadata"]["annotations"] = annotations
    return yaml.safe_dump(base, sort_keys=False)


class GitRepo:
    """A throwaway repository: indexes/ holds the manifest and a copy of the quickstart data."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "--quiet", "--initial-branch=main")
        self.git("config", "user.name", "Test")
        self.git("config", "user.email", "test@example.com")
        self.git("config", "commit.gpgsign", "false")
        shutil.copytree(QUICKSTART / "data", path / "indexes" / "data")

    def git(self, *args: str) -> str:
        out = subprocess.run(["git", *args], cwd=self.path, check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def commit(self, text: str | None, message: str, file: str = "indexes/quickstart.yaml") -> str:
        """Write (or with None, delete) `file` and commit; returns the new SHA."""
        target = self.path / file
        if text is None:
            self.git("rm", "--quiet", file)
        else:
            target.write_text(text)
            self.git("add", "--all")
        self.git("commit", "--quiet", "-m", message)
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", ref)


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    """A plain directory with the quickstart data (for watch and plan tests)."""
    d = tmp_path / "manifests"
    shutil.copytree(QUICKSTART / "data", d / "data")
    return d


def run_cli(argv: list[str]) -> int:
    """The real CLI entry point."""
    from controller.cli import main
    return main.main(argv)


def journal_links(journal: list[dict[str, Any]]) -> list[tuple[str, str | None, float, str | None]]:
    """(stable, candidate, weight, commit) after each journalled routing change."""
    return [(r["to"]["stable"], r["to"]["candidate"], r["to"]["weight"], r.get("commit")) for r in journal]
