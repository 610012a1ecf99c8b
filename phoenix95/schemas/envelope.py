"""The event envelope every message carries, and the field types shared by all message models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

from phoenix95.domain.values import ACTIONS

_MAX_ID = 64
_MAX_TEXT = 200


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


#: A finite Decimal that travels as a string ("0.1", never a float).
DecimalStr = Annotated[Decimal, Field(allow_inf_nan=False), PlainSerializer(_decimal_text, return_type=str)]
PositiveDecimal = Annotated[Decimal, Field(gt=0, allow_inf_nan=False), PlainSerializer(_decimal_text, return_type=str)]
NonNegativeDecimal = Annotated[
    Decimal, Field(ge=0, allow_inf_nan=False), PlainSerializer(_decimal_text, return_type=str)
]
UnitDecimal = Annotated[
    Decimal, Field(ge=0, le=1, allow_inf_nan=False), PlainSerializer(_decimal_text, return_type=str)
]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Identifier = Annotated[str, Field(min_length=1, max_length=_MAX_ID)]
Symbol = Annotated[str, Field(pattern=r"^[A-Z0-9]{2,20}$")]
ShortText = Annotated[str, Field(max_length=_MAX_TEXT)]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Message(BaseModel):
    """Base of every Avro record model: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro writes: decimals as strings, datetimes as aware datetimes."""
        return self.model_dump(mode="python")


class Event(Message):
    """A message with the envelope. Subclasses set SCHEMA_NAME and SCHEMA_VERSION."""

    SCHEMA_NAME: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: Identifier
    correlation_id: Identifier
    causation_id: Identifier | None = None
    ts_event: UtcDatetime
    ts_ingest: UtcDatetime
    schema_version: int
    producer: ShortText

    @classmethod
    def envelope(
        cls,
        *,
        event_id: str,
        correlation_id: str,
        causation_id: str | None,
        ts_event: datetime,
        producer: str,
        ts_ingest: datetime | None = None,
    ) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "ts_event": ts_event,
            "ts_ingest": ts_ingest or utc_now(),
            "schema_version": cls.SCHEMA_VERSION,
            "producer": producer,
        }

    @classmethod
    def build(cls, **fields: Any) -> Self:
        """Validate and build (the path for data from outside)."""
        return cls.model_validate(fields)

    @classmethod
    def trusted(cls, **fields: Any) -> Self:
        """Build from values our own code computed, skipping validation (the hot path)."""
        return cls.model_construct(**fields)  # type: ignore[return-value]


def is_action(value: str) -> bool:
    return value in ACTIONS
