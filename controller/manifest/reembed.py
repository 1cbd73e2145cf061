"""spec.reembed: batch re-embedding as Kubernetes Jobs (schedule, shards, parallelism) and its ordering.

Kept apart from models.py so the embedding work can grow without touching the
shared manifest module beyond one field.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

# five fields (minute hour day-of-month month day-of-week) of numbers, names, * , - / ; or a macro
_CRON_FIELD = r"[0-9A-Za-z*,/\-?]+"
CRON = re.compile(rf"^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
                  rf"{_CRON_FIELD}(\s+{_CRON_FIELD}){{4}})\s*$")
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(s|m|h)$"
_UNIT = {"s": 1, "m": 60, "h": 3600}


def duration_seconds(text: str) -> int:
    """'30m' -> 1800 (the pattern above has been checked by the model)."""
    return int(float(text[:-1]) * _UNIT[text[-1]])


class ReembedSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

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
    shards: int = Field(default=1, ge=1, le=1000,
                        description="Disjoint shards (Indexed Job completions); pod i runs `embed --shard i/N`.")
    parallelism: int = Field(default=1, ge=1, le=1000, description="Shards running at once (Job parallelism).")
    backoff_limit: int = Field(default=6, ge=0, le=100,
                               description="Retries of failed shard pods before the Job fails (backoffLimit).")
    priority: Literal["none", "hot"] = Field(
        default="none",
        description=("Order in which documents are embedded: none (corpus order) or hot (most impressions and "
                     "clicks in the service's event log first, else by priorityField)."),
    )
    priority_field: str | None = Field(
        default=None, min_length=1,
        description="Numeric corpus field ordering documents for priority: hot (higher first) when there are no events.",
    )

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
