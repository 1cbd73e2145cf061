"""Options an audit found accepted, or refused only by a traceback: each now fails the plan, exit 2, in one line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from controller.embed import make_embedder
from controller.embed.hashing import HashingEmbedder
from controller.embed.http import validated_options
from controller.errors import InvalidInput
from tests.helpers import manifest, workspace, write_manifest

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cretPW"


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "controller.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def model(provider: str, options: dict) -> dict:
    return {"provider": provider, "name": "m", "version": "1", "dim": 16, "options": options}


@pytest.mark.parametrize("url,said", [
    ("http://127.0.0.1:99999/v1", "port from 0 to 65535"),
    ("http://127.0.0.1:abc/v1", "port from 0 to 65535"),
    ("http://127.0.0.1:-1/v1", "port from 0 to 65535"),
])
def test_http_base_url_with_a_bad_port_is_invalid_input(url, said):
    with pytest.raises(InvalidInput) as err:
        validated_options({"baseUrl": url}, 16, "m")
    assert err.value.field == "spec.model.options.baseUrl" and err.value.value == url
    assert said in str(err.value) and repr(url) in str(err.value)


@pytest.mark.parametrize("url", [f"http://bob:{PASSWORD}@127.0.0.1:9/v1", f"https://:{PASSWORD}@h/v1",
                                 "http://bob@127.0.0.1:9/v1"])
def test_http_base_url_with_credentials_is_refused_without_the_password(url):
    with pytest.raises(InvalidInput) as err:
        validated_options({"baseUrl": url}, 16, "m")
    message = str(err.value)
    assert err.value.field == "spec.model.options.baseUrl" and "apiKeyEnv" in message
    assert PASSWORD not in message and "bob" not in message and "***@" in message
    assert PASSWORD not in repr(err.value.value)


def test_http_good_base_urls_still_pass():
    for url in ("http://127.0.0.1:8000/v1", "https://api.example.com/v1", "http://[::1]:65535/v1"):
        assert validated_options({"baseUrl": url}, 16, "m")["baseUrl"] == url


@pytest.mark.parametrize("options,field", [
    ({"wordNgrams": True}, "wordNgrams"),
    ({"seed": True}, "seed"),
    ({"seed": False}, "seed"),
    ({"charNgrams": [True]}, "charNgrams"),
    ({"buckets": True}, "buckets"),
    ({"projections": True}, "projections"),
])
def test_hashing_refuses_booleans_for_integers(options, field):
    with pytest.raises(InvalidInput) as err:
        HashingEmbedder(16, True, options, {})
    assert err.value.field == f"spec.model.options.{field}"
    assert "(got True)" in str(err.value) or "(got False)" in str(err.value)


def test_is_int_is_the_one_shared_helper():
    from controller.embed.base import is_int

    assert is_int(3, 0, 5) and not is_int(True, 0, 5) and not is_int(6, 0, 5) and not is_int(2.0, 0, 5)
    import controller.embed.http as http

    assert not hasattr(http, "_is_int")  # one copy, in controller/embed/base.py


@pytest.mark.parametrize("options,field", [
    ({"model": "./rel", "bogus": 1}, "spec.model.options.bogus"),
    ({"model": "./rel"}, "spec.model.options.model"),
    ({"batchSize": True}, "spec.model.options.batchSize"),
])
def test_sentence_transformers_options_are_checked_before_the_extra(monkeypatch, tmp_path, options, field):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sentence_transformers" else real(name, *a))
    manifest_path = tmp_path / "index.yaml"
    with pytest.raises(InvalidInput) as err:
        make_embedder(model("sentence-transformers", options), {}, manifest_path)
    assert err.value.field == field and err.value.file == str(manifest_path)


@pytest.mark.parametrize("options,said", [
    ({"baseUrl": "http://127.0.0.1:99999/v1"}, "field spec.model.options.baseUrl"),
    ({"baseUrl": f"http://bob:{PASSWORD}@127.0.0.1:9/v1"}, "field spec.model.options.baseUrl"),
])
def test_dry_run_refuses_bad_http_base_urls_with_exit_2(tmp_path, options, said):
    ws = workspace(tmp_path, n_docs=10)
    doc = manifest("v1")
    doc["spec"]["model"] = {"provider": "http", "name": "m", "version": "1", "dim": 16, "options": options}
    path = write_manifest(ws, doc)
    out = cli("reconcile", str(path), "--store", str(tmp_path / "store"), "--dry-run")
    assert out.returncode == 2, out.stderr
    assert said in out.stderr and str(path) in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and PASSWORD not in out.stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("meta.json"))


def test_dry_run_refuses_boolean_hashing_options_with_exit_2(tmp_path):
    ws = workspace(tmp_path, n_docs=10)
    path = write_manifest(ws, manifest("v1", {"wordNgrams": True, "seed": True, "charNgrams": [True]}))
    out = cli("reconcile", str(path), "--store", str(tmp_path / "store"), "--dry-run")
    assert out.returncode == 2, out.stderr
    assert "field spec.model.options.wordNgrams" in out.stderr and "Traceback" not in out.stderr
    assert yaml.safe_load(path.read_text())["spec"]["model"]["options"]["seed"] is True
