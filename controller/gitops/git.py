"""The git CLI behind sync and diff: a bare mirror in the store, exports of one commit.

Why the git CLI and not a library: it reaches every URL the user's git can
(ssh keys, credential helpers, proxies, local paths) with no new dependency.
The mirror lives under <store>/gitops/<hash of the URL>/mirror.git; each
commit is exported with `git archive` into exports/<sha>/, so a reconcile
reads exactly the files of that commit, never a working tree someone edits.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from controller.errors import GitError, InvalidInput

GIT_TIMEOUT_S = 300
KEEP_EXPORTS = 3  # the applied commit and a couple before it stay readable for rollbacks



def source_key(repo: str) -> str:
    """A stable directory name for a repository URL or path."""
    return hashlib.sha256(normalize_repo(repo).encode()).hexdigest()[:12]


def normalize_repo(repo: str) -> str:
    """Local paths become absolute so `.` and `/abs/path` share one mirror."""
    if "://" in repo or (":" in repo and not os.path.exists(repo)):
        return repo  # URL or scp-like `host:path`
    return str(Path(repo).resolve())


def _run(args: list[str], cwd: Path | None = None, what: str = "") -> bytes:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}  # never hang on a password prompt in a loop
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S, env=env)
    except FileNotFoundError as exc:
        raise GitError("the git command is not installed or not on PATH; install git to use GitOps mode") from exc
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"git {_verb(args)} timed out after {GIT_TIMEOUT_S}s{what}") from exc
    if proc.returncode != 0:
        raise GitError(f"git {_verb(args)} failed{what}: {_first_error(proc.stderr, proc.returncode)}")
    return proc.stdout


def _verb(args: list[str]) -> str:
    """The git subcommand, skipping global options such as `--git-dir DIR`."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] == "--git-dir" else rest[1:]
    return rest[0] if rest else "command"


def _first_error(stderr: bytes, code: int) -> str:
    """git's first `fatal:`/`error:` line says what went wrong; the rest is advice."""
    lines = [l.strip() for l in stderr.decode(errors="replace").splitlines() if l.strip()]
    for line in lines:
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                return line[len(prefix):]
    return lines[0] if lines else f"exit code {code}"


@dataclass(frozen=True)
class Mirror:
    """A bare mirror of one repository under the store."""

    repo: str
    root: Path  # <store>/gitops/<key>

    @classmethod
    def for_store(cls, store_root: Path, repo: str) -> Mirror:
        return cls(normalize_repo(repo), Path(store_root) / "gitops" / source_key(repo))

    @property
    def git_dir(self) -> Path:
        return self.root / "mirror.git"

    def fetch(self) -> None:
        """Fetch every branch and tag; remote branches land in refs/remotes/origin/."""
        if not (self.git_dir / "HEAD").is_file():
            self.git_dir.mkdir(parents=True, exist_ok=True)
            _run(["init", "--quiet", "--bare", str(self.git_dir)])
        _run(["--git-dir", str(self.git_dir), "fetch", "--quiet", "--prune", "--force", "--tags", self.repo,
              "+refs/heads/*:refs/remotes/origin/*"], what=f" for {self.repo}")

    def resolve(self, ref: str) -> str:
        """The commit SHA of a branch, tag or (abbreviated) SHA, after fetch(); else whatever the
        repository itself resolves `ref` to (its HEAD, a remote-tracking branch such as origin/f
        in a clone, a full SHA of a commit no branch points at), fetched on its own."""
        sha = self._resolved(ref) or self._fetched(ref)
        if sha is None:
            raise InvalidInput(f"no branch, tag or commit named {ref!r} in {self.repo}; check the name "
                               "(`git ls-remote` lists the refs)", value=ref)
        return sha

    def _resolved(self, ref: str) -> str | None:
        for candidate in (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref):
            try:
                out = _run(["--git-dir", str(self.git_dir), "rev-parse", "--verify", "--quiet",
                            f"{candidate}^{{commit}}"])
            except GitError:
                continue
            return out.decode().strip()
        return None

    def _fetched(self, ref: str) -> str | None:
        # a refspec of the user's: no option (-x), no destination (a:b) and no pattern may ride along
        if not ref or ref.startswith("-") or any(c in ref for c in ":*^~? \t\\"):
            return None
        try:
            _run(["--git-dir", str(self.git_dir), "fetch", "--quiet", "--no-tags", self.repo,
                  f"+{ref}:refs/fetched/ref"])
        except GitError:
            return None
        return self._resolved("refs/fetched/ref")

    def export(self, sha: str) -> Path:
        """Exactly the files of `sha`, extracted once into exports/<sha>/ (reused afterwards)."""
        dest = self.root / "exports" / sha
        if dest.is_dir():
            return dest
        data = _run(["--git-dir", str(self.git_dir), "archive", "--format=tar", sha], what=f" for {sha[:12]}")
        self._sweep_staging()
        staging = dest.with_name(f".staging-{sha}-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                members = tar.getmembers()
                refuse_escaping_links(members)  # before any file is written: a clean one-line refusal
                # the "data" filter stays as a second line of defence (device files, odd modes)
                tar.extractall(staging, members=members, filter="data")
            os.replace(staging, dest)  # readers see a complete export or none
        except tarfile.TarError as exc:
            raise GitError(f"commit {sha[:12]} cannot be exported safely: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone after os.replace; a refusal leaves nothing
        return dest

    def _sweep_staging(self) -> None:
        """Remove staging directories left by exports that were killed midway (their pid is gone)."""
        base = self.root / "exports"
        if not base.is_dir():
            return
        for leftover in base.glob(".staging-*"):
            pid = leftover.name.rsplit("-", 1)[-1]
            if not (pid.isdigit() and _pid_alive(int(pid))):
                shutil.rmtree(leftover, ignore_errors=True)

    def prune_exports(self, keep: set[str]) -> None:
        """Drop old exports, keeping `keep` and the newest few."""
        base = self.root / "exports"
        if not base.is_dir():
            return
        dirs = sorted((d for d in base.iterdir() if not d.name.startswith(".")),
                      key=lambda d: d.stat().st_mtime, reverse=True)
        for d in dirs[KEEP_EXPORTS:]:
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)

    def changed_files(self, base: str, head: str) -> list[str]:
        out = _run(["--git-dir", str(self.git_dir), "diff", "--name-only", base, head])
        return [line for line in out.decode().splitlines() if line]


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def link_escapes(name: str, target: str) -> bool:
    """Whether a link at `name` (a path inside the tree) pointing at `target` leaves the tree.

    Lexical, like the path a reader would follow: git stores link targets as text, and
    every intermediate directory of an export is a real directory (git archive never
    writes paths through a symlink)."""
    if not target or posixpath.isabs(target):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    return resolved == ".." or resolved.startswith("../")


def refuse_escaping_links(members: list[tarfile.TarInfo]) -> None:
    """A commit with an absolute symlink, or one that leaves the repository, is refused whole
    (the caller names the commit)."""
    for member in members:
        if member.issym() and link_escapes(member.name, member.linkname):
            raise InvalidInput(f"a symlink to {member.linkname!r}, outside the repository (only symlinks "
                               "that stay inside the repository are allowed)", file=member.name)
        if member.islnk() and link_escapes(".", member.linkname):
            raise InvalidInput(f"a hard link to {member.linkname!r}, outside the repository", file=member.name)


def subdir(export: Path, path: str | None, sha: str) -> Path:
    """The manifest directory inside an export; refuses paths that leave it."""
    target = (export / (path or ".")).resolve()
    if not target.is_relative_to(export.resolve()):
        raise InvalidInput(f"--path {path!r} points outside the repository", field="--path", value=path)
    if not target.exists():
        raise InvalidInput(f"--path {path!r} does not exist at commit {sha[:12]}", field="--path", value=path)
    return target


def strip_export(text: str, export: Path) -> str:
    """Messages name files by their path in the repository, not in the store's export cache."""
    for prefix in {str(export.resolve()), str(export)}:
        text = text.replace(prefix + os.sep, "")
    return text
