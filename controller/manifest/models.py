"""Pydantic models of the EmbeddingIndex manifest (apiVersion indexops.dev/v1alpha1).

This module is pure: no file system, no vector library. Field names are camelCase in
YAML (Kubernetes convention) and snake_case in Python. Every model forbids
unknown fields so a typo is an error, not a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator,
                      model_serializer, model_validator)
from pydantic.alias_generators import to_camel

from controller.manifest.defaults import DEFAULT_MAX_DROP, GATE_METRIC_PATTERN, NAME_PATTERN, VERSION_PATTERN
from controller.manifest.reembed import ReembedSpec

API_VERSION = "indexops.dev/v1alpha1"
KIND = "EmbeddingIndex"
# Provider options that change how vectors are fetched, not what they are: outside the
# fingerprint, so moving a server or tuning throughput does not count as a new model.
RUNTIME_OPTIONS: dict[str, frozenset[str]] = {
    "http": frozenset({"baseUrl", "batchSize", "concurrency", "timeout", "retries", "backoff",
                       "maxBackoff", "apiKeyEnv", "secretRef"}),
    "sentence-transformers": frozenset({"device", "batchSize", "allowDownload"}),
}


class Model(BaseModel):
    """Base: camelCase aliases, unknown fields forbidden, populate by either name."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True, allow_inf_nan=False
    )


class Metadata(Model):
    name: str = Field(
        description="Name of the index (DNS-1123 label): the key of its store directory and status.",
        pattern=NAME_PATTERN,
        max_length=63,
    )
    namespace: str | None = Field(
        default=None, description="Kubernetes namespace; ignored by the local CLI."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Free-form annotations.")


class CorpusSpec(Model):
    path: str = Field(description="JSON Lines file of documents, relative to the manifest.")
    id_field: str = Field(default="id", min_length=1, description="Field of each document holding its unique id.")
    text_fields: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["text"],
        min_length=1,
        description="Fields joined with one space to form the text that is embedded.",
    )
    max_removed: StrictFloat = Field(
        default=0.10,
        ge=0,
        le=1,
        description=(
            "Largest share (0-1) of the stable version's documents a new version may lose; more fails "
            "the gate CorpusShrank (default 0.10). Raise it for an intended cut."
        ),
    )


def _finite_options(options: dict[str, Any]) -> dict[str, Any]:
    """Refuse .nan/.inf anywhere in the options: the JSON dump providers validate turns them into null,
    which reads as "not set", so `dimensions: .nan` was silently the default."""
    def walk(value: Any, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"option {where} must be a finite number (got {value})")
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")

    for key, value in options.items():
        walk(value, str(key))
    return options


Options = Annotated[dict[str, Any], AfterValidator(_finite_options)]


class QueryEmbedderSpec(Model):
    provider: str = Field(
        description="Embedder of query text into the documents' space (any provider except precomputed)."
    )
    name: str = Field(min_length=1, description="Query model name.")
    version: str = Field(min_length=1, description="Query model version.")
    dim: StrictInt = Field(gt=0, le=65536, description="Vector dimension; must equal spec.model.dim.")
    normalize: bool = Field(default=True, description="L2-normalise query vectors.")
    options: Options = Field(default_factory=dict, description="Provider-specific options.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("provider")
    @classmethod
    def _embeds_text(cls, value: str) -> str:
        from controller.manifest.providers import capabilities

        if not capabilities(value).embeds_text:
            raise ValueError(f"a query embedder must embed text; provider {value!r} cannot")
        return value


class ModelSpec(Model):
    provider: Literal["hashing", "precomputed", "sentence-transformers", "http"] = Field(
        description=(
            "Embedder: 'hashing' is the built-in offline embedder; 'precomputed' reads vectors "
            "made by another pipeline from options.vectors; 'http' calls an OpenAI-compatible "
            "/v1/embeddings server; 'sentence-transformers' runs a local model (extra "
            "[sentence-transformers]). See docs/embedding.md."
        )
    )
    name: str = Field(min_length=1, description="Model name, part of the fingerprint.")
    version: str = Field(min_length=1, description="Model version, part of the fingerprint.")
    dim: StrictInt = Field(gt=0, le=65536, description="Vector dimension the model emits.")
    normalize: bool = Field(
        default=True, description="L2-normalise vectors after embedding (and queries alike)."
    )
    options: Options = Field(
        default_factory=dict,
        description=(
            "Provider-specific options. hashing: wordNgrams (1), charNgrams ([]), seed (0), buckets "
            "(2^20), projections (2), sublinearTf (true). precomputed: vectors (.npy, row i = document i), "
            "ids (text file, one id per line, optional), queryVectors (.npy) and queryIds for golden queries. "
            "http: baseUrl, model, batchSize, concurrency, timeout, retries, backoff, maxBackoff, truncate, "
            "maxChars, dimensions, queryPrefix, documentPrefix, inputType, apiKeyEnv, secretRef. "
            "sentence-transformers: model (directory or cached name), device, batchSize, prompts, maxSeqLength, "
            "allowDownload. Options that "
            "only tune throughput or where the key lives are not part of the fingerprint."
        ),
    )

    query_embedder: QueryEmbedderSpec | None = Field(
        default=None,
        description=(
            "How the search service embeds query text for this model's space (e.g. the model that "
            "made precomputed vectors); without it a precomputed version answers vector queries only. "
            "Not part of the fingerprint."
        ),
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # YAML reads `version: 2` as an int; a model version is a label.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_serializer(mode="wrap")
    def _omit_absent_query_embedder(self, handler: Any) -> dict[str, Any]:
        # without a query embedder the dump (and so the manifest digest and version meta) stays
        # exactly what it was before the field existed
        data = handler(self)
        for key in ("queryEmbedder", "query_embedder"):
            if key in data and data[key] is None:
                del data[key]
        return data

    @model_validator(mode="after")
    def _query_embedder_dim(self) -> ModelSpec:
        if self.query_embedder is not None and self.query_embedder.dim != self.dim:
            raise ValueError(f"queryEmbedder.dim {self.query_embedder.dim} differs from dim {self.dim}: "
                             "queries must land in the documents' space")
        return self

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the vector space: two sets of vectors are comparable only when equal."""
        return {
            "provider": self.provider,
            "name": self.name,
            "version": self.version,
            "dim": self.dim,
            "normalize": self.normalize,
            "optionsHash": options_hash({k: v for k, v in self.options.items()
                                         if k not in RUNTIME_OPTIONS.get(self.provider, ())}),
        }


#: spec.index.backend.type when none is given: the embedded files in the store.
DEFAULT_BACKEND = "faiss"


class BackendSpec(Model):
    """Where a version's vectors live; every key besides ``type`` is a parameter of that backend."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True, frozen=True,
                              allow_inf_nan=False)

    type: str = Field(
        default=DEFAULT_BACKEND, pattern=NAME_PATTERN,
        description=(
            "Vector backend: faiss (files in the store, the default), pgvector or qdrant. The other keys "
            "are that backend's parameters, checked before anything is built (docs/backends.md)."
        ),
    )

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class IndexSpec(Model):
    version: str = Field(
        description="Label of the built index version; immutable once built.",
        pattern=VERSION_PATTERN,
        max_length=63,
    )
    factory: str = Field(
        default="Flat", min_length=1,
        description="index_factory string of the default backend (same as spec.index.backend.factory).",
    )
    metric: Literal["cosine", "ip", "l2"] = Field(
        default="cosine", description="Similarity: cosine (normalised inner product), ip or l2."
    )
    backend: BackendSpec = Field(default_factory=BackendSpec, description="Vector backend and its parameters.")

    @model_serializer(mode="wrap")
    def _omit_default_backend(self, handler: Any) -> dict[str, Any]:
        # the default backend leaves the dump (so the manifest digest) as it was before the field existed
        data = handler(self)
        if self.backend == BackendSpec():
            data.pop("backend", None)
        return data

    @model_validator(mode="after")
    def _factory_of_default_backend(self) -> IndexSpec:
        params = self.backend.params()
        if self.backend.type == DEFAULT_BACKEND:
            if "factory" in params:
                if "factory" in self.model_fields_set and params["factory"] != self.factory:
                    raise ValueError(f"spec.index.factory {self.factory!r} and spec.index.backend.factory "
                                     f"{params['factory']!r} differ: give one of them")
                if not isinstance(params["factory"], str) or not params["factory"]:
                    raise ValueError("spec.index.backend.factory must be a non-empty string")
                object.__setattr__(self, "factory", params["factory"])  # one name for the build
        elif "factory" in self.model_fields_set and self.factory != IndexSpec.model_fields["factory"].default:
            raise ValueError(f"spec.index.factory is a parameter of the {DEFAULT_BACKEND} backend; "
                             f"{self.backend.type} takes its index parameters under spec.index.backend")
        return self

    def backend_settings(self) -> tuple[str, dict[str, Any]]:
        """(type, parameters) of the backend; the default backend gets its factory here."""
        params = self.backend.params()
        if self.backend.type == DEFAULT_BACKEND:
            params["factory"] = self.factory
        return self.backend.type, params

    def structure(self) -> str:
        """What a built version's index structure is compared by (the factory for the default backend)."""
        kind, params = self.backend_settings()
        if kind == DEFAULT_BACKEND:
            return self.factory
        return f"{kind}:{json.dumps(params, sort_keys=True, separators=(',', ':'))}"

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


Duration = str | float


def _duration_seconds(value: Any) -> float:
    """'10m', '30s', '1h', '500ms' or seconds; ValueError (pydantic names the field) otherwise."""
    from controller.durations import parse_duration
    from controller.errors import InvalidInput

    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 10m or 1h, got {value!r}")
    try:
        return parse_duration(str(value), "duration")
    except InvalidInput:
        raise ValueError(f"expected a positive duration of at most a year, such as 30s, 10m or 1h, "
                         f"got {value!r}") from None


class _DurationFields(Model):
    """Validates every duration field at load time, so a typo names its field before any write."""

    @field_validator("duration", "interval", "max_duration", check_fields=False)
    @classmethod
    def _valid_duration(cls, value: Any) -> Any:
        if value is not None:
            _duration_seconds(value)
        return value

    def seconds(self, name: str) -> float | None:
        value = getattr(self, name, None)
        return None if value is None else _duration_seconds(value)


class PauseStep(_DurationFields):
    duration: Duration | None = Field(
        default=None,
        description="How long to hold the current weights (30s, 10m, 1h); without it the rollout waits "
                    "for `controller promote`.",
    )


class OnlineGateSpec(Model):
    metric: str = Field(
        min_length=1,
        description="Online metric from the event log: ctr, ctr@K, clicksPerQuery, mrr, dwellMean, skipRate, "
                    "complaintRate, zeroResultRate, errorRate, latencyP50/P95/P99, mirrorOverlap, mirrorRbo, "
                    "mirrorJaccard, mirrorErrorRate, mirrorLatencyP50/P95/P99 (see docs/rollouts.md).",
    )
    max_drop: StrictFloat | None = Field(default=None, ge=0, description="Largest drop of the candidate versus stable.")
    max_increase: StrictFloat | None = Field(default=None, ge=0,
                                       description="Largest increase of the candidate versus stable.")
    min: StrictFloat | None = Field(default=None, description="Absolute floor for the candidate.")
    max: StrictFloat | None = Field(default=None, description="Absolute ceiling for the candidate.")
    min_samples: StrictInt | None = Field(default=None, ge=1,
                                    description="Samples per arm before this gate can decide; default: the step's.")

    @model_validator(mode="after")
    def _has_threshold(self) -> OnlineGateSpec:
        if all(v is None for v in (self.max_drop, self.max_increase, self.min, self.max)):
            raise ValueError("an online gate needs maxDrop, maxIncrease, min or max")
        return self


class AnalysisStep(_DurationFields):
    gates: list[OnlineGateSpec] = Field(min_length=1, description="Online gates, candidate against stable.")
    interval: Duration = Field(default="1m", description="How often the gates are evaluated (default 1m).")
    min_samples: StrictInt = Field(default=100, ge=1, description="Samples per arm before any gate may pass.")
    max_duration: Duration | None = Field(
        default=None, description="Still inconclusive after this long: the rollout is aborted (default: wait).")
    alpha: StrictFloat = Field(default=0.05, gt=0, lt=1,
                         description="False-abort rate of the sequential test over all looks (default 0.05).")


class InterleaveStep(_DurationFields):
    percentage: StrictFloat = Field(gt=0, le=100, description="Share of queries answered with a team-draft merge "
                                                         "of stable and candidate.")
    min_queries: StrictInt = Field(default=200, ge=1, description="Interleaved queries with a click before deciding.")
    interval: Duration = Field(default="1m", description="How often the preference test is evaluated.")
    max_duration: Duration | None = Field(
        default=None, description="Still inconclusive after this long: the rollout is aborted (default: wait).")
    alpha: StrictFloat = Field(default=0.05, gt=0, lt=1, description="False-decision rate of the preference test.")
    margin: StrictFloat = Field(default=0.0, ge=0, lt=0.5,
                          description="Non-inferiority margin: pass when the candidate's win share is surely above "
                                      "0.5 - margin (0: it must be preferred).")


class RolloutStep(Model):
    """One step, in Argo Rollouts' vocabulary: exactly one of the keys."""

    set_weight: StrictFloat | None = Field(default=None, ge=0, le=100,
                                     description="Send this share of queries (0-100) to the candidate.")
    set_mirror: StrictFloat | None = Field(default=None, ge=0, le=100,
                                     description="Copy this share of queries to the candidate off the request "
                                                 "path; its results are logged, never returned.")
    pause: PauseStep | None = Field(default=None, description="Hold: {duration: 10m}, or {} until promoted.")
    analysis: AnalysisStep | None = Field(default=None, description="Online gates evaluated at an interval.")
    interleave: InterleaveStep | None = Field(default=None, description="Team-draft interleaving test.")

    @model_validator(mode="after")
    def _exactly_one(self) -> RolloutStep:
        given = [k for k in ("set_weight", "set_mirror", "pause", "analysis", "interleave")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            names = ", ".join(to_camel(k) for k in given) or "none"
            raise ValueError(f"a step has exactly one of setWeight, setMirror, pause, analysis, interleave "
                             f"(got {names})")
        return self

    @model_serializer(mode="wrap")
    def _only_the_step(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


ConfirmGate = Literal["rollout", "step", "trafficIncrease", "promotion"]


class ConfirmSpec(Model):
    url: str = Field(pattern=r"^https?://", description="Receiver POSTed at each gate of `before`; "
                                                        "HTTP 200 = go, anything else (or no answer) = wait.")
    timeout: StrictFloat = Field(default=5, gt=0, le=60, description="Seconds to wait for the receiver; it is asked "
                                                               "again every 30 s while it says wait.")
    before: list[ConfirmGate] = Field(
        default=["promotion"], min_length=1,
        description="Gates it holds (Flagger's confirm-*): rollout (before the first step), step (before every "
                    "step), trafficIncrease (before a step that raises the weight or starts interleaving), "
                    "promotion (before the alias switches; the default).")

    @model_serializer(mode="wrap")
    def _omit_default_gates(self, handler: Any) -> dict[str, Any]:
        # a confirm written before `before` existed keeps its manifest digest (no restart of its steps)
        out = handler(self)
        return {k: v for k, v in out.items() if not (k == "before" and v == ["promotion"])}

    def gate(self) -> dict[str, Any]:
        """What the step machine keeps: the receiver (for messages) and the gates, in a stable order."""
        return {"url": self.url, "before": sorted(set(self.before), key=["rollout", "step", "trafficIncrease",
                                                                          "promotion"].index)}


class RolloutSpec(Model):
    percentage: StrictFloat = Field(
        default=100,
        ge=0,
        le=100,
        description="Share of queries (0-100) the new version serves once its gates pass; 100 switches the "
                    "alias. Ignored when steps are given.",
    )
    steps: list[RolloutStep] | None = Field(
        default=None,
        description="Progressive delivery steps (setWeight, setMirror, pause, analysis, interleave) run in "
                    "order after the offline gates pass; after the last one the alias switches. See "
                    "docs/rollouts.md.",
    )
    confirm: ConfirmSpec | None = Field(
        default=None, description="Confirm webhook (Flagger's confirm-rollout, -traffic-increase, -promotion): "
                                  "holds the gates named in `before` until its receiver answers 200.")

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: Any) -> dict[str, Any]:
        # without steps the dump (and so the manifest digest) stays what it was before they existed
        return {k: v for k, v in handler(self).items() if not (k in ("steps", "confirm") and v is None)}


class DriftCheck(Model):
    metric: str = Field(
        description=(
            "Drift statistic: psi, kl, js, wasserstein, normShift (norm distributions); cosineShift, "
            "pairCosineShift (similarity distributions, valid across models); ksDims, mmd (same model only)."
        )
    )
    max: StrictFloat | Literal["auto"] | None = Field(
        default=None,
        description="Threshold above which the statistic counts as drift; default: the statistic's own.",
    )
    enforce: bool = Field(
        default=False,
        description="When true a drifted statistic fails the rollout like a golden gate; by default drift is reported, not gated.",
    )


class GoldenGate(Model):
    metric: str = Field(
        description=(
            "Metric at a cutoff: ndcg@K, recall@K, mrr@K, precision@K, hitrate@K (trec_eval definitions), "
            "or annRecall@K (share of the exact top-K the index returns)."
        ),
        pattern=GATE_METRIC_PATTERN,
    )
    min: StrictFloat | None = Field(default=None, description="Absolute floor for the new version.")
    max_drop: StrictFloat | None = Field(
        default=None, ge=0, description="Largest allowed drop versus the stable version."
    )

    @model_validator(mode="after")
    def _has_threshold(self) -> GoldenGate:
        if self.min is None and self.max_drop is None:
            raise ValueError("a gate needs min, maxDrop or both")
        return self


class GoldenSpec(Model):
    queries: str | None = Field(
        default=None, description="BEIR queries.jsonl (_id, text), relative to the manifest."
    )
    qrels: str = Field(description="Qrels TSV (query-id corpus-id score) or TREC qrels file.")
    k: StrictInt = Field(default=10, gt=0, le=10000, description="Retrieval depth for evaluation.")
    gates: list[GoldenGate] = Field(
        default_factory=list,
        description=f"Quality gates; when empty: ndcg@K and recall@K with maxDrop {DEFAULT_MAX_DROP} versus stable.",
    )
    confidence: StrictFloat | None = Field(
        default=None,
        gt=0,
        lt=1,
        description=(
            "When set (e.g. 0.95), maxDrop is tested on the upper end of the paired bootstrap interval "
            "of the drop (non-inferiority) instead of the point estimate."
        ),
    )


class CorpusDriftMetric(Model):
    metric: str = Field(
        description="Drift statistic (any of spec.checks.drift[].metric; ksDims and mmd apply: same model)."
    )
    max: StrictFloat | Literal["auto"] | None = Field(
        default=None,
        description="Threshold; default: the statistic's own; auto: calibrated on the reference version.",
    )


def _default_corpus_metrics() -> list[dict[str, str]]:
    # plain dicts (validated into models by validate_default) keep the default JSON-printable
    return [{"metric": m} for m in ("mmd", "ksDims", "cosineShift")]


class CorpusDriftSpec(Model):
    metrics: list[CorpusDriftMetric] = Field(
        default_factory=_default_corpus_metrics,
        validate_default=True,
        min_length=1,
        description="Statistics comparing new or changed documents with the stable version (default: mmd, ksDims, cosineShift).",
    )
    compare: Literal["changed", "all"] = Field(
        default="changed",
        description="changed: only new or changed documents vs the stable version's vectors; all: the whole new corpus.",
    )
    retrain: bool = Field(
        default=False,
        description=(
            "When the corpus drifted and the index is trained (IVF, PQ): true retrains it on the new corpus; "
            "false keeps the stable version's centroids/codebooks and sets IndexStale=True. Without drift "
            "the trained structures are always reused (vectors are only added)."
        ),
    )


class ChecksSpec(Model):
    drift: list[DriftCheck] = Field(default_factory=list, description="Drift statistics stable vs shadow.")
    corpus_drift: CorpusDriftSpec | None = Field(
        default=None,
        description="Corpus drift under the same model, measured when the corpus changes (see docs/drift.md).",
    )
    golden: GoldenSpec | None = Field(default=None, description="Golden query->docs evaluation.")


class HistorySpec(Model):
    keep: StrictInt = Field(default=3, ge=1, le=100, description="Built versions kept for rollback.")


class IndexSpecRoot(Model):
    alias: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="Name clients query; default: metadata.name."
    )
    corpus: CorpusSpec = Field(description="Documents to embed.")
    model: ModelSpec = Field(description="Embedding model.")
    index: IndexSpec = Field(description="Index version, vector backend and build parameters.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="Progressive delivery.")
    checks: ChecksSpec = Field(default_factory=ChecksSpec, description="Drift and quality checks.")
    history: HistorySpec = Field(default_factory=HistorySpec, description="Version retention.")
    suspend: bool = Field(default=False, description="When true the reconciler leaves this index alone.")
    reembed: ReembedSpec | None = Field(
        default=None, description="Batch re-embedding: Kubernetes Jobs, schedule, shards (docs/embedding.md).")
    on_delete: Literal["retain", "delete"] | None = Field(
        default=None,
        description=(
            "Kubernetes operator: what deleting the resource does to the store, retain (keep every built "
            "version) or delete; default: the operator's setting (retain)."
        ),
    )

    @model_serializer(mode="wrap")
    def _omit_absent_reembed(self, handler: Any) -> dict[str, Any]:
        # without spec.reembed the manifest digest stays what it was before the field existed
        data = handler(self)
        if data.get("reembed", 0) is None:
            del data["reembed"]
        return data

    @property
    def priority_field(self) -> str | None:
        """The corpus field that orders embedding when the event log is empty (reembed priority: hot)."""
        reembed = self.reembed
        return reembed.priority_field if reembed is not None and reembed.priority == "hot" else None


class EmbeddingIndex(Model):
    """An EmbeddingIndex manifest: desired model, index version and rollout."""

    api_version: Literal["indexops.dev/v1alpha1"] = Field(
        alias="apiVersion", description="Always indexops.dev/v1alpha1."
    )
    kind: Literal["EmbeddingIndex"] = Field(description="Always EmbeddingIndex.")
    metadata: Metadata = Field(description="Name and labels.")
    spec: IndexSpecRoot = Field(description="Desired state.")

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def alias(self) -> str:
        return self.spec.alias or self.metadata.name


def options_hash(options: dict[str, Any]) -> str:
    """Stable short hash of provider options (key order does not matter)."""
    canonical = json.dumps(options, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
