"""spec.reembed: batch re-embedding as Kubernetes Jobs (schedule, shards, parallelism) and its ordering.

Kept apart from models.py so the embedding work can grow without touching the
shared manifest module beyond one field.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator, model_serializer,
                      model_validator)
from pydantic.alias_generators import to_camel

# five fields (minute hour day-of-month month day-of-week) of numbers, names, * , - / ; or a macro
_CRON_FIELD = r"[0-9A-Za-z*,/\-?]+"
CRON = re.compile(rf"^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
                  rf"{_CRON_FIELD}(\s+{_CRON_FIELD}){{4}})\s*$")
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(s|m|h)$"
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: rebuildAfter as a duration: minutes, hours or days since the last full build
REBUILD_AFTER_DURATION = re.compile(r"^[0-9]+(\.[0-9]+)?(m|h|d)$")


def duration_seconds(text: str) -> int:
    """'30m' -> 1800 (the pattern above has been checked by the model)."""
    return int(float(text[:-1]) * _UNIT[text[-1]])


class ReembedSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True,
                              allow_inf_nan=False)

    schedule: str | None = Field(
        default=None,
        description=("Cron schedule (Kubernetes CronJob syntax, e.g. \"0 2 * * *\") of a nightly re-embedding "
                     "run; without it the operator runs one Indexed Job when the model's embeddings are missing."),
    )
    window: str | None = Field(
        default=None, pattern=DURATION_PATTERN,
        description=("Longest a run may take (e.g. 4h), the Job's activeDeadlineSeconds: at its end the pods "
                     "get SIGTERM, keep what is in flight and the next run resumes."),
    )
    shards: StrictInt = Field(default=1, ge=1, le=1000,
                        description="Disjoint shards (Indexed Job completions); pod i runs `embed --shard i/N`.")
    parallelism: StrictInt = Field(default=1, ge=1, le=1000, description="Shards running at once (Job parallelism).")
    backoff_limit: StrictInt = Field(default=6, ge=0, le=100,
                               description="Retries of failed shard pods before the Job fails (backoffLimit).")
    priority: Literal["none", "hot"] = Field(
        default="none",
        description=("Order in which documents are embedded: none (corpus order) or hot (most impressions and "
                     "clicks in the service's event log first, else by priorityField)."),
    )
    priority_field: str | None = Field(
        default=None, min_length=1,
        description=("Numeric corpus field ordering documents for priority: hot (higher first; missing or null: 0) "
                     "when there are no events."),
    )

    refresh: Literal["rebuild", "inPlace"] = Field(
        default="rebuild",
        description=("What a corpus change under the same model does to the serving version: rebuild (a "
                     "revision is built and rolled out like a new version) or inPlace (rows are removed and "
                     "added in the serving index where its type allows, checked, and the alias moves to it)."),
    )
    rebuild_after: StrictInt | str | None = Field(
        default=None,
        description=("With refresh: inPlace, when a corpus change is a full rebuild instead: after this many "
                     "in-place refreshes since the last full build (e.g. 10), or once this long has passed "
                     "since it (e.g. 7d, 12h, 90m). Without it, only IndexStale or an index type that cannot "
                     "remove rows (HNSW) forces a rebuild."),
    )

    @field_validator("rebuild_after", mode="before")
    @classmethod
    def _rebuild_after(cls, value: Any) -> Any:
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        if isinstance(value, str) and REBUILD_AFTER_DURATION.match(value) and rebuild_after_seconds(value) > 0:
            return value
        raise ValueError("expected a count of in-place refreshes (an integer >= 1, e.g. 10) or a duration "
                         "since the last full build (e.g. 90m, 12h, 7d)")  # the loader appends the value

    @model_validator(mode="after")
    def _rebuild_after_needs_in_place(self) -> ReembedSpec:
        if self.rebuild_after is not None and self.refresh != "inPlace":
            raise ValueError(f"rebuildAfter {self.rebuild_after!r} applies to in-place refreshes: "
                             "set refresh: inPlace (or remove rebuildAfter)")
        return self

    @model_serializer(mode="wrap")
    def _omit_refresh_defaults(self, handler: Any) -> dict[str, Any]:
        # manifests written before in-place refresh existed keep their digest
        data = handler(self)
        for key in ("refresh", "rebuildAfter", "rebuild_after"):
            if key in data and data[key] in (None, "rebuild"):
                del data[key]
        return data

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not CRON.match(value):
            raise ValueError(f"expected a cron schedule of five fields such as '0 2 * * *', got {value!r}")
        return value

    @model_validator(mode="after")
    def _parallelism_fits(self) -> ReembedSpec:
        if self.parallelism > self.shards:
            raise ValueError(f"parallelism {self.parallelism} exceeds shards {self.shards}: "
                             "at most one pod per shard runs at once")
        return self


def rebuild_after_seconds(text: str) -> float:
    """'7d' -> 604800.0 (the pattern has been checked)."""
    return float(text[:-1]) * _UNIT[text[-1]]
