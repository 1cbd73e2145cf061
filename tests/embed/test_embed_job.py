"""`controller embed`: shards, workers, and resuming after SIGKILL at a counting server."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from controller.cli.main import main
from controller.embed.cache import EmbeddingCache
from controller.errors import InvalidInput
from controller.manifest.load import load_manifests
from controller.store.corpus import read_corpus
from controller.store.fs import Store
from tests.embed.fake_openai import FakeEmbeddingServer
from tests.embed.test_cache import documents_embedded, http_manifest
from tests.helpers import manifest, workspace, write_manifest

REPO = Path(__file__).resolve().parents[2]


def cache_of(store: Path, path: Path) -> EmbeddingCache:
    [loaded] = load_manifests(path)
    return EmbeddingCache.for_store(store, loaded.manifest.spec.model.fingerprint())


def test_shards_partition_the_corpus_and_workers_agree(tmp_path, capsys):
    ws = workspace(tmp_path, n_docs=120)
    path = write_manifest(ws, manifest("v1"))
    hashes = set(json.loads(l)["id"] for l in (ws / "data" / "corpus.jsonl").read_text().splitlines())
    n = len(hashes)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["embed", str(path), "--store", str(one), "--shard", "0/2", "-o", "json"]) == 0
    first = json.loads(capsys.readouterr().out)["jobs"][0]
    assert main(["embed", str(path), "--store", str(one), "--shard", "1/2", "-o", "json"]) == 0
    second = json.loads(capsys.readouterr().out)["jobs"][0]
    assert first["embedded"] + second["embedded"] == n and first["hits"] == second["hits"] == 0
    assert 0 < first["documents"] < n
    assert main(["embed", str(path), "--store", str(two), "--workers", "2", "-o", "json"]) == 0
    both = json.loads(capsys.readouterr().out)["jobs"][0]
    assert both["embedded"] == n
    a, b = cache_of(one, path), cache_of(two, path)
    [loaded] = load_manifests(path)
    from controller.store.corpus import read_corpus
    corpus = read_corpus(loaded.paths["corpus"], "id", ["title", "text"])
    fa, va = a.get(corpus.hashes)
    fb, vb = b.get(corpus.hashes)
    assert fa.all() and fb.all()
    np.testing.assert_array_equal(va, vb)  # bit for bit, whichever process embedded a text
    assert len(list(b.dir.glob("*.idx"))) == 2  # both processes took chunks, each into its own files
    # the build after the job embeds nothing
    assert main(["reconcile", str(path), "--store", str(one), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["indexes"][0]["embedded"] == 0


def test_bad_shard_is_invalid_input(tmp_path, capsys):
    ws = workspace(tmp_path, n_docs=10)
    path = write_manifest(ws, manifest("v1"))
    assert main(["embed", str(path), "--store", str(tmp_path / "s"), "--shard", "2/2"]) == 2
    assert "--shard" in capsys.readouterr().err


def test_guided_chunks_cover_the_work_in_order_and_shrink_towards_the_end():
    from controller.engine.embedding import guided_chunks

    for total, processes, smallest, largest in ((5183, 2, 64, 1024), (240, 2, 64, 512), (10, 4, 1, 1024),
                                                (100_000, 8, 1024, 8192), (0, 2, 64, 1024)):
        spans = guided_chunks(total, processes, smallest, largest)
        assert [i for span in spans for i in span] == list(range(total))
        sizes = [len(span) for span in spans]
        assert all(smallest <= n <= largest for n in sizes[:-1]) and all(n <= largest for n in sizes[-1:])
        assert sizes == sorted(sizes, reverse=True)
    assert len(guided_chunks(5183, 2, 64, 1024)) < 20  # each chunk costs two fsyncs


def test_two_workers_show_the_progress_of_the_whole_job(tmp_path):
    from controller.engine.embedding import embed_job

    ws = workspace(tmp_path, n_docs=300)
    [loaded] = load_manifests(write_manifest(ws, manifest("v1")))
    labels, seen = [], []

    def progress(label):
        labels.append(label)
        return lambda done, total: seen.append((done, total))
    report = embed_job(loaded, Store(tmp_path / "store"), workers=2, progress=progress)
    assert labels == [f"embedding (0 cached, {report['misses']} to embed)"]
    assert seen[-1] == (report["embedded"], report["embedded"]) and report["embedded"] > 200
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)  # never backwards


def test_a_failing_batch_stops_every_worker_and_a_retry_embeds_each_text_once(tmp_path):
    from controller.engine.embedding import embed_job
    from controller.errors import EmbedError

    ws = workspace(tmp_path, n_docs=240)
    store = Store(tmp_path / "store")
    with FakeEmbeddingServer(dim=16) as server:
        doc = http_manifest(server, "v1")
        doc["spec"]["model"]["options"].update(batchSize=4, concurrency=1, retries=0)
        [loaded] = load_manifests(write_manifest(ws, doc))
        server.faults.extend([None] * 6 + ["500"])
        with pytest.raises(EmbedError, match=r"provider http .* failed after 1 attempts; last error: HTTP 500"
                                             r".* texts to embed are cached; a retry resumes there"):
            embed_job(loaded, store, workers=2)
        report = embed_job(loaded, store, workers=2)
        assert report["coverage"]["documentShare"] == 1.0
        assert max(server.embedded.values()) == 1  # what landed before the failure was not sent again
        assert documents_embedded(server) == report["documents"]


def descendants(pid: int) -> set[int]:
    """Processes whose parent is `pid` (Linux /proc), and theirs."""
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        parents, frontier = frontier, set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in parents:
                frontier.add(int(stat.parent.name))
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def interrupt_and_resume(tmp_path: Path, signum: int, *, kills: int = 20, batch: int = 8, concurrency: int = 2,
                         workers: int = 1):
    """`kills` runs of `controller embed`, each hit by `signum` at a random point after its first request,
    then a run to completion. Returns (server, corpus size, cache, signals that landed, exit codes).
    With `workers`, every helper process must be gone once the job has ended."""
    ws = workspace(tmp_path, n_docs=240)
    store = tmp_path / "store"
    rng = random.Random(7)
    server = FakeEmbeddingServer(dim=16, work_per_text=0.004)
    with server:
        doc = http_manifest(server, "v1")
        doc["spec"]["model"]["options"].update(batchSize=batch, concurrency=concurrency)
        path = write_manifest(ws, doc)
        corpus_size = len((ws / "data" / "corpus.jsonl").read_text().splitlines())
        cmd = [sys.executable, "-m", "controller.cli.main", "embed", str(path), "--store", str(store),
               "--workers", str(workers)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        landed, codes = 0, []
        for _ in range(kills):
            seen = len(server.requests)
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while len(server.requests) == seen and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.15))
            helpers = descendants(proc.pid) if workers > 1 and sys.platform == "linux" else set()
            if proc.poll() is None:
                proc.send_signal(signum)
                landed += 1
            _, err = proc.communicate(timeout=60)
            assert b"Traceback" not in err, err.decode()
            codes.append(proc.returncode)
            deadline = time.monotonic() + 10
            while any(alive(p) for p in helpers) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not any(alive(p) for p in helpers), "helper processes outlived their job"
        final = subprocess.run(cmd + ["-o", "json"], env=env, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr
    return server, corpus_size, cache_of(store, path), landed, codes


def stored_rows(cache: EmbeddingCache) -> int:
    return sum(len(p.read_bytes()) // 17 for p in cache.dir.glob("*.idx"))


@pytest.mark.slow
def test_sigterm_at_random_points_then_resume_embeds_the_corpus_exactly_once(tmp_path):
    """The graceful stop (what Kubernetes sends first) keeps the batches in flight: the server's count is exact."""
    server, corpus_size, cache, landed, codes = interrupt_and_resume(tmp_path, signal.SIGTERM)
    assert landed >= 10
    # interrupted runs exit 1 (EmbedInterrupted), no traceback; a signal landing after the work was done
    # and the handlers were restored (while printing the report) ends the process the default way (-15)
    assert set(codes) <= {0, 1, -signal.SIGTERM} and 1 in codes
    assert len(cache) == corpus_size and stored_rows(cache) == corpus_size  # 0 missing, 0 stored twice
    passages = {t: n for t, n in server.embedded.items() if t.startswith("passage: ")}
    assert len(passages) == corpus_size  # 0 missing at the server
    assert max(passages.values()) == 1   # 0 duplicates at the server
    assert documents_embedded(server) == corpus_size


@pytest.mark.slow
def test_sigterm_with_two_workers_keeps_what_every_process_has_in_flight(tmp_path):
    """The parent relays the stop: its helper sends nothing new and persists its batches in flight too."""
    server, corpus_size, cache, landed, codes = interrupt_and_resume(tmp_path, signal.SIGTERM, kills=8, workers=2)
    assert landed >= 4 and 1 in codes
    assert len(cache) == corpus_size and stored_rows(cache) == corpus_size
    passages = {t: n for t, n in server.embedded.items() if t.startswith("passage: ")}
    assert len(passages) == corpus_size and max(passages.values()) == 1


@pytest.mark.slow
def test_sigkill_with_two_workers_takes_the_helpers_down_too(tmp_path):
    """A helper dies with its parent (nothing lingers, nothing races the resumed job): each process loses
    at most its own batches in flight."""
    batch, concurrency, workers = 8, 2, 2
    server, corpus_size, cache, landed, _ = interrupt_and_resume(tmp_path, signal.SIGKILL, kills=8, batch=batch,
                                                                 concurrency=concurrency, workers=workers)
    assert landed >= 4
    assert len(cache) == corpus_size and stored_rows(cache) == corpus_size
    assert corpus_size <= documents_embedded(server) <= corpus_size + landed * batch * concurrency * workers


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_loses_at_most_the_batches_in_flight(tmp_path):
    """A SIGKILL cannot be caught: a request the server answered but whose answer was not yet written
    is lost, and sent again on resume. Nothing is stored twice or missing; the server's surplus is
    bounded by the batches in flight (batchSize x concurrency texts) per kill."""
    batch, concurrency = 8, 2
    server, corpus_size, cache, landed, _ = interrupt_and_resume(tmp_path, signal.SIGKILL, batch=batch,
                                                                 concurrency=concurrency)
    total = documents_embedded(server)
    assert landed >= 10
    assert len(cache) == corpus_size and stored_rows(cache) == corpus_size  # 0 missing, 0 stored twice
    assert corpus_size <= total <= corpus_size + landed * batch * concurrency
    print(f"{landed} SIGKILLs: server embedded {total} texts for {corpus_size} documents "
          f"(bound {corpus_size + landed * batch * concurrency})")


def write_events(store: Path, index: str, impressions: dict[str, int], clicks: dict[str, int] = {},
                 age_s: float = 0.0) -> None:
    """Impressions and clicks as the search service logs them (controller.store.events.EventLog)."""
    from controller.store.events import EventLog, events_root

    log = EventLog(events_root(store))
    ts = time.time() - age_s
    for n, (doc, count) in enumerate(impressions.items()):
        for k in range(count):
            log.append({"type": "impression", "ts": ts, "requestId": f"r{n}-{k}", "index": index,
                        "version": "v0", "ids": [doc]})
    for doc, count in clicks.items():
        for k in range(count):
            log.append({"type": "click", "ts": ts, "requestId": f"c-{doc}-{k}", "index": index, "docId": doc})
    log.flush()
    log.close()


def test_hot_first_embeds_the_most_used_documents_first_and_reports_coverage(tmp_path, capsys):
    ws = workspace(tmp_path, n_docs=40)
    store = tmp_path / "store"
    ids = [json.loads(l)["id"] for l in (ws / "data" / "corpus.jsonl").read_text().splitlines()]
    hot = {ids[-1]: 5, ids[-2]: 3, ids[-3]: 1}
    write_events(store, "qs", hot, clicks={ids[-3]: 4})     # ids[-3]: 1 view + 4 clicks = 5 uses
    write_events(store, "qs", {ids[0]: 50}, age_s=8 * 86400)  # older than a week: not hot
    with FakeEmbeddingServer(dim=16) as server:
        doc = http_manifest(server, "v1")
        doc["spec"]["model"]["options"].update(batchSize=2, concurrency=1)
        doc["spec"]["reembed"] = {"priority": "hot"}
        path = write_manifest(ws, doc)
        assert main(["embed", str(path), "--store", str(store), "--shard", "0/1", "-o", "json"]) == 0
        report = json.loads(capsys.readouterr().out)["jobs"][0]
        first_batches = [r["body"]["input"] for r in server.requests[:2]]
    corpus = {json.loads(l)["id"]: json.loads(l) for l in (ws / "data" / "corpus.jsonl").read_text().splitlines()}

    def text(i: str) -> str:
        return "passage: " + " ".join(str(corpus[i][f]) for f in ("title", "text") if corpus[i].get(f))
    assert set(first_batches[0]) == {text(ids[-1]), text(ids[-3])}  # 5 uses each
    assert first_batches[1][0] == text(ids[-2])                      # 3 uses
    assert report["priority"] == "hot"
    assert report["coverage"] == {"documents": len(ids), "embedded": len(ids), "documentShare": 1.0,
                                  "impressions": 9, "impressionShare": 1.0}


def test_coverage_counts_documents_and_last_weeks_impressions_of_a_partial_run(tmp_path, capsys):
    from controller.engine.embedding import Shard, embed_job, embedding_coverage

    ws = workspace(tmp_path, n_docs=40)
    store = Store(tmp_path / "store")
    path = write_manifest(ws, manifest("v1"))
    [loaded] = load_manifests(path)
    from controller.store.corpus import read_corpus
    corpus = read_corpus(loaded.paths["corpus"], "id", ["title", "text"])
    shard = Shard(0, 2)
    views = {doc: 1 + n % 4 for n, doc in enumerate(corpus.ids[:30])}
    write_events(store.root, "qs", views)
    embed_job(loaded, store, shard=shard)
    coverage = embedding_coverage(loaded, store)
    done = [shard.holds(h) for h in corpus.hashes]
    assert coverage.embedded == sum(done) and coverage.documents == len(corpus.ids)
    assert coverage.impressions == sum(views.values())
    assert coverage.impressions_embedded == sum(n for doc, n in views.items() if done[corpus.ids.index(doc)])
    assert 0 < coverage.to_dict()["impressionShare"] < 1


def test_priority_field_orders_the_corpus_when_there_are_no_events(tmp_path):
    from controller.engine.embedding import priority_order

    ws = workspace(tmp_path, n_docs=10)
    lines = [json.loads(l) for l in (ws / "data" / "corpus.jsonl").read_text().splitlines()]
    for n, doc in enumerate(lines):
        doc["popularity"] = (n * 7) % 5
    (ws / "data" / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in lines) + "\n")
    doc = manifest("v1")
    doc["spec"]["reembed"] = {"priority": "hot", "priorityField": "popularity"}
    [loaded] = load_manifests(write_manifest(ws, doc))
    s = loaded.manifest.spec
    corpus = read_corpus(loaded.paths["corpus"], s.corpus.id_field, s.corpus.text_fields, priority_field=s.priority_field)
    order = priority_order(loaded, Store(tmp_path / "store"), corpus, list(range(len(corpus))))
    pops = [lines[i]["popularity"] for i in order]
    assert pops == sorted(pops, reverse=True) and sorted(order) == list(range(len(corpus)))
    assert order != sorted(order)


def test_a_priority_field_that_is_not_a_number_fails_the_plan_not_the_embed_job(tmp_path, capsys):
    """Checked only by `controller embed` before, it passed `reconcile --dry-run` and failed each Job pod."""
    ws = workspace(tmp_path, n_docs=10)
    lines = [json.loads(l) for l in (ws / "data" / "corpus.jsonl").read_text().splitlines()]
    lines[3]["popularity"] = "high"
    (ws / "data" / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in lines) + "\n")
    doc = manifest("v1")
    doc["spec"]["reembed"] = {"priority": "hot", "priorityField": "popularity"}
    path = write_manifest(ws, doc)
    assert main(["reconcile", str(path), "--dry-run", "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert "line 4: priorityField 'popularity' must be a number" in err and "(got 'high')" in err, err


def test_a_priority_field_is_read_with_the_corpus_whatever_its_encoding_quirks(tmp_path, capsys):
    """Read on its own before (json.loads per line), a corpus starting with a BOM failed with a traceback."""
    ws = workspace(tmp_path, n_docs=10)
    lines = [json.loads(l) for l in (ws / "data" / "corpus.jsonl").read_text().splitlines()]
    for n, line in enumerate(lines):
        line["popularity"] = None if n % 3 else n
    body = "\r\n".join(json.dumps(d) for d in lines) + "\r\n"
    (ws / "data" / "corpus.jsonl").write_bytes(b"\xef\xbb\xbf" + body.encode())
    doc = manifest("v1")
    doc["spec"]["reembed"] = {"priority": "hot", "priorityField": "popularity"}
    path = write_manifest(ws, doc)
    assert main(["reconcile", str(path), "--dry-run", "--store", str(tmp_path / "store")]) == 0, capsys.readouterr()


def test_reconcile_does_not_embed_what_a_running_embed_job_owns_and_reuses_it_after(tmp_path, capsys):
    """The job's lock is a flock: held while `controller embed` runs, gone when it ends (or is killed)."""
    from controller.engine.embedding import cache_for
    from controller.embed import make_embedder

    ws = workspace(tmp_path, n_docs=30)
    store = tmp_path / "store"
    path = write_manifest(ws, manifest("v1"))
    [loaded] = load_manifests(path)
    embedder = make_embedder(loaded.manifest.spec.model.model_dump(mode="json", by_alias=True), loaded.paths)
    lock = cache_for(Store(store), embedder).dir / ".owner.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_SH); print('held', flush=True); time.sleep(60)"), str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # a running `controller embed` (shared lock)
        assert main(["reconcile", str(path), "--store", str(store)]) == 1
        err = capsys.readouterr().err
        assert "`controller embed` owns the work" in err and "Traceback" not in err
        assert not (store / "indexes" / "qs" / "versions" / "v1").exists()
        # a second job shares the lock: shards run side by side
        assert main(["embed", str(path), "--store", str(store), "-o", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["jobs"][0]["embedded"] > 0
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock
        holder.wait()
    assert main(["reconcile", str(path), "--store", str(store), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["indexes"][0]["embedded"] == 0
