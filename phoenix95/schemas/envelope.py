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
#: A market price: positive and below 10^12, the most the NUMERIC(20, 8) price columns hold (a
#: larger one is refused here, with its field named, rather than failing deep in a stage).
MAX_PRICE = Decimal(10) ** 12
Price = Annotated[
    Decimal, Field(gt=0, lt=MAX_PRICE, allow_inf_nan=False), PlainSerializer(_decimal_text, return_type=str)
]
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

    @classmethod
    def trusted(cls, **fields: Any) -> Self:
        """Build from values our own code computed, skipping validation (the hot path).

        What `model_construct` does for a model without aliases, private attributes or post-init,
        minus its per-field alias lookups: several times faster, which matters for every event a
        stage emits. Missing fields take their defaults; unknown fields are an error.
        """
        defaults = _DEFAULTS.get(cls)
        if defaults is None:
            defaults = _DEFAULTS[cls] = {
                name: field.get_default(call_default_factory=True)
                for name, field in cls.model_fields.items()
                if not field.is_required()
            }
        unknown = fields.keys() - cls.model_fields.keys()
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
        values = {**defaults, **fields} if len(fields) < len(cls.model_fields) else fields
        instance = cls.__new__(cls)
        object.__setattr__(instance, "__dict__", values)
        object.__setattr__(instance, "__pydantic_fields_set__", set(fields))
        object.__setattr__(instance, "__pydantic_extra__", None)
        object.__setattr__(instance, "__pydantic_private__", None)
        return instance


_DEFAULTS: dict[type[BaseModel], dict[str, Any]] = {}


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


def is_action(value: str) -> bool:
    return value in ACTIONS
