"""Regenerate the quickstart data: a small subset of BEIR SciFact.

SciFact (Wadden et al., 2020; claims and annotations CC BY 4.0, abstracts
ODC-By 1.0) as packaged by BEIR (Thakur et al., 2021). The subset keeps 120
test claims, every abstract judged relevant for them, and unjudged abstracts
as distractors, so the demo runs offline on real text.

    python examples/quickstart/make_data.py [SCIFACT_DIR]
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_QUERIES = 120
N_DISTRACTORS = 480


def main(src: Path) -> None:
    qrels: dict[str, list[str]] = {}
    for line in (src / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.strip().split("\t")
        qrels.setdefault(qid, []).append(did)
    qids = sorted(qrels, key=int)[:N_QUERIES]
    relevant = {d for q in qids for d in qrels[q]}
    corpus = [json.loads(line) for line in (src / "corpus.jsonl").open()]
    rng = random.Random(13)
    others = [d for d in corpus if d["_id"] not in relevant]
    keep = relevant | {d["_id"] for d in rng.sample(others, N_DISTRACTORS)}
    out = HERE / "data"
    out.mkdir(exist_ok=True)
    with (out / "corpus.jsonl").open("w") as f:
        for d in corpus:
            if d["_id"] in keep:
                f.write(json.dumps({"id": d["_id"], "title": d["title"], "text": d["text"]}) + "\n")
    queries = {q["_id"]: q["text"] for q in map(json.loads, (src / "queries.jsonl").open())}
    with (out / "queries.jsonl").open("w") as f:
        for q in qids:
            f.write(json.dumps({"_id": q, "text": queries[q]}) + "\n")
    with (out / "qrels.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            for d in qrels[q]:
                f.write(f"{q}\t{d}\t1\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data" / "scifact")
