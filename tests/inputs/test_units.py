"""Units of the safe-input layer: the limited YAML loader and controller.inputs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

from controller.errors import InvalidInput
from controller.inputs import iter_lines, load_npy, open_regular, read_text, snippet
from controller.manifest import yamlsafe


def test_yaml_merge_keys_and_ordinary_aliases_still_load():
    docs = yamlsafe.load_all("base: &b {x: 1, y: 2}\nover:\n  <<: *b\n  y: 3\nlist: [*b, *b]\n")
    assert docs == [{"base": {"x": 1, "y": 2}, "over": {"x": 1, "y": 3}, "list": [{"x": 1, "y": 2}] * 2}]


@pytest.mark.parametrize("text, problem", [
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' (first at line 1)"),
    ("x: " + "[" * 100 + "]" * 100, "nesting deeper than 64"),
    ("x: " + "{a: " * 100 + "1" + "}" * 100, "nesting deeper than 64"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"b{i}: &b{i} [" + ", ".join([f"*{'a' if i == 0 else f'b{i - 1}'}"] * 10) + "]\n" for i in range(6)),
     "alias bomb"),
    ("a: &a\n  b: *a\n", "its own ancestor"),
])
def test_yaml_limits(text, problem):
    with pytest.raises(yaml.YAMLError) as info:
        yamlsafe.load_all(text)
    assert problem in str(info.value)
    assert info.value.problem_mark is not None  # the caller names the line


def test_yaml_depth_at_the_limit_is_fine():
    depth = yamlsafe.MAX_DEPTH - 2
    (doc,) = yamlsafe.load_all("x: " + "[" * depth + "]" * depth)
    assert isinstance(doc["x"], list)


def test_open_regular_refuses_fifos_without_blocking(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInput, match="is a FIFO"):
        open_regular(fifo)
    with pytest.raises(InvalidInput, match="is a directory"):
        open_regular(tmp_path)
    with pytest.raises(InvalidInput, match="is a device"):
        open_regular("/dev/null")
    with pytest.raises(InvalidInput, match="NUL byte"):
        open_regular("a\0b")
    with pytest.raises(InvalidInput, match="does not exist"):
        open_regular(tmp_path / "nope")


def test_utf8_errors_name_line_and_byte(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"ok\nalso ok\nbad \xc3\x28 here\n")
    with pytest.raises(InvalidInput, match=r"line 3, byte 5 of the line \(0-based byte offset 15 in the file\)"):
        list(iter_lines(p))
    with pytest.raises(InvalidInput, match=r"line 3, byte 5 of the line \(0-based byte offset 15 in the file\)"):
        read_text(p)
    p.write_bytes(b"\xef\xbb\xbfhello\n")
    assert list(iter_lines(p)) == [(1, "hello")]


def test_read_text_size_limit(tmp_path):
    p = tmp_path / "big"
    p.write_bytes(b"x" * 101)
    with pytest.raises(InvalidInput, match="101 bytes; the limit is 100 bytes"):
        read_text(p, max_bytes=100)
    assert read_text(p, max_bytes=101) == "x" * 101


def test_load_npy_reads_a_good_matrix_without_pickle(tmp_path):
    p = tmp_path / "v.npy"
    np.save(p, np.arange(12, dtype=np.float32).reshape(3, 4))
    m = load_npy(p)
    assert m.shape == (3, 4) and m.dtype == np.float32 and float(m[2, 3]) == 11.0


def test_snippet_escapes_and_truncates():
    assert snippet("a\tb\x00c") == "a\\tb\\x00c"
    assert snippet("x" * 100) == "x" * 40 + "..."
    assert snippet(b"\xff\xfe") == "\\\\xff\\\\xfe"


def test_gate_aliases_are_scored_under_their_canonical_name():
    from controller.engine.checks import gate_specs
    from controller.manifest.models import GoldenSpec
    spec = GoldenSpec.model_validate({"qrels": "q.tsv", "gates": [{"metric": "p@5", "min": 0.1},
                                                                  {"metric": "success@3", "maxDrop": 0.1},
                                                                  {"metric": "annRecall@10", "min": 0.9}]})
    assert [g.metric for g in gate_specs(spec)] == ["precision@5", "hitrate@3", "annRecall@10"]


def test_metric_names_live_in_one_list():
    import re

    from controller.checks.golden import REGISTRY, parse_metric
    from controller.manifest.defaults import GATE_METRIC_NAMES, GATE_METRIC_PATTERN, GOLDEN_METRICS
    assert list(REGISTRY) == list(GOLDEN_METRICS)
    for spelled in GATE_METRIC_NAMES:
        assert re.match(GATE_METRIC_PATTERN, f"{spelled}@10")
        if spelled != "annRecall":
            assert parse_metric(f"{spelled}@10")[0] in REGISTRY
    assert not re.match(GATE_METRIC_PATTERN, "ndcgg@10")


def test_a_number_is_shown_unless_the_message_says_it_as_got():
    """"from 1 to 100000" does not show a bad 1; the message must say (got 1)."""
    from controller.errors import InvalidInput

    assert str(InvalidInput("expected an integer from 1 to 100000", value=1)).endswith("(got 1)")
    assert str(InvalidInput("at least 0", value=0)).endswith("at least 0 (got 0)")
    assert str(InvalidInput("bad size (got 5)", value=5)).count("(got 5)") == 1
    assert str(InvalidInput("path '/etc' escapes", value="/etc")) == "path '/etc' escapes"
