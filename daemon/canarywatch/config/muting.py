"""Config sections that keep a notification from being sent: ``time_intervals`` (named spans
routes mute or activate on), ``inhibit_rules`` and ``silences``.

Time intervals are kept as written: ``canarywatch.labels.timeintervals`` is their one parser,
called by the loader. Matchers are checked here and parsed again, by the same parser, where they
are applied (``pipeline.inhibit``, ``pipeline.silence``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, Field, model_validator

from canarywatch.config.fields import SECTION, DocType, LabelName, Matcher, Name

TimeIntervalValue = Annotated[object, DocType("range")]
"""A range in a time interval (``monday:friday``, ``1:7``, ``-1``, ``2025``), kept as written:
``canarywatch.labels.timeintervals.parse_time_interval`` is the one parser and validator."""


class TimeRangeSpec(BaseModel):
    """A span of the day as written; ``[start_time, end_time)``."""

    model_config = SECTION

    start_time: Annotated[object, DocType("HH:MM")] = Field(
        description="Start of the span, HH:MM (inclusive). Quote it: YAML reads 19:00 as a number."
    )
    end_time: Annotated[object, DocType("HH:MM")] = Field(
        description="End of the span, HH:MM up to 24:00 (exclusive)."
    )


class TimeIntervalSpec(BaseModel):
    """One interval as written (Alertmanager's keys). An omitted field matches anything; a
    given one matches when any of its entries does, so an empty list matches nothing."""

    model_config = SECTION

    times: tuple[TimeRangeSpec, ...] | None = Field(
        default=None,
        description="Spans of the day.",
        json_schema_extra={"doc_default": "any time"},
    )
    weekdays: tuple[TimeIntervalValue, ...] | None = Field(
        default=None,
        description="Day names or ranges, e.g. `monday:friday`, `saturday`; weeks start on sunday.",
        json_schema_extra={"doc_default": "any day"},
    )
    days_of_month: tuple[TimeIntervalValue, ...] | None = Field(
        default=None,
        description="Days or ranges, e.g. `1:7`; negative counts from the month's end (`-1`).",
        json_schema_extra={"doc_default": "any day"},
    )
    months: tuple[TimeIntervalValue, ...] | None = Field(
        default=None,
        description="Month names or numbers, or ranges, e.g. `january:march`, `12`.",
        json_schema_extra={"doc_default": "any month"},
    )
    years: tuple[TimeIntervalValue, ...] | None = Field(
        default=None,
        description="Years or ranges, e.g. `2025:2026`.",
        json_schema_extra={"doc_default": "any year"},
    )
    location: Annotated[object, DocType("time zone")] = Field(
        default=None,
        description="IANA time zone the other fields are read in, e.g. `Europe/Berlin`.",
        json_schema_extra={"doc_default": "UTC"},
    )


class TimeIntervalSet(BaseModel):
    """A named list of intervals; routes refer to it by ``name``."""

    model_config = SECTION

    name: Name = Field(description="Unique name routes refer to.")
    time_intervals: tuple[TimeIntervalSpec, ...] = Field(
        min_length=1, description="The intervals; the name covers a moment when any of them does."
    )


class InhibitRule(BaseModel):
    """While an event matching ``source_matchers`` is firing, mute matching targets."""

    model_config = SECTION

    source_matchers: tuple[Matcher, ...] = Field(
        min_length=1, description="Matchers selecting the muting (source) events."
    )
    target_matchers: tuple[Matcher, ...] = Field(
        min_length=1, description="Matchers selecting the events to mute."
    )
    equal: tuple[LabelName, ...] = Field(
        default=(), description="Labels whose values must be equal in source and target."
    )


class Silence(BaseModel):
    """A silence declared in config: mutes matching events between two instants."""

    model_config = SECTION

    matchers: tuple[Matcher, ...] = Field(
        min_length=1, description="Matchers the silenced events must all satisfy."
    )
    starts_at: datetime = Field(description="Start, RFC 3339 with a time zone.")
    ends_at: datetime = Field(description="End, RFC 3339 with a time zone; after starts_at.")
    created_by: Annotated[str, Field(min_length=1)] = Field(description="Who added it.")
    comment: Annotated[str, Field(min_length=1)] = Field(description="Why it exists.")

    @model_validator(mode="after")
    def _window(self) -> Self:
        for name in ("starts_at", "ends_at"):
            if getattr(self, name).utcoffset() is None:
                raise ValueError(f"{name} needs a time zone offset (e.g. Z or +02:00)")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self
