"""`--where`: a small, safe expression language over the decoded fields of a message.

    plan.notional > 100 and decision == "APPROVED"
    symbol in ["BTCUSDT", "ETHUSDT"] or not (confidence >= 0.5)
    reasons contains "CONFIDENCE_BELOW_MIN"
    $key == "XRPUSDT" and $headers["p95-schema"] startswith "phoenix95.Order"

A tokenizer and a recursive-descent parser compile the text to a tree of closures; nothing is ever
evaluated as Python. Grammar (keywords are case-insensitive)::

    expression := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand [operator operand]
    operator   := == | = | != | < | <= | > | >= | in | not in
                | contains | startswith | endswith | matches
    operand    := literal | path | list | "(" expression ")"
    list       := "[" [literal ("," literal)*] "]"
    literal    := number | "string" | 'string' | true | false | null
    path       := ["$"] name ("." name | "[" (number | string) "]")*

A path reads the decoded value (`plan.notional` is `value["plan"]["notional"]`); a path starting
with `$` reads the message itself: `$topic`, `$partition`, `$offset`, `$timestamp`, `$key`,
`$schema`, `$error`, `$headers.name`. A missing field is null. A bare operand is true when it is
not null, false, zero or empty.

Comparisons follow the data, not Python's types: our decimals travel as strings, so a string
compared with a number is read as a decimal (`price > 1.5`); a timestamp compared with a string
reads the string as ISO-8601, and with a number as epoch milliseconds. A comparison that cannot be
made (e.g. "abc" < 3) is false, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

#: Evaluates part of an expression for one message: (value, metadata) -> result.
Evaluator = Callable[[Any, Mapping[str, Any]], Any]
Predicate = Callable[[Any, Mapping[str, Any]], bool]

KEYWORDS = frozenset(
    {"and", "or", "not", "in", "contains", "startswith", "endswith", "matches", "true", "false", "null"}
)
WORD_OPERATORS = ("in", "contains", "startswith", "endswith", "matches")
SYMBOL_OPERATORS = ("==", "!=", "<=", ">=", "=", "<", ">")
METADATA_FIELDS = frozenset({"topic", "partition", "offset", "timestamp", "key", "schema", "error", "headers"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>\$?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<operator>==|!=|<=|>=|=|<|>)
  | (?P<punctuation>[()\[\],.])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


class ExpressionError(ValueError):
    """The expression cannot be read; says where and why."""

    def __init__(self, message: str, expression: str, column: int):
        self.column = column
        pointer = f"\n  {expression}\n  {' ' * column}^"
        super().__init__(f"{message} at column {column + 1}{pointer}")


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, name, keyword, operator, punctuation, end
    text: str
    column: int
    value: Any = None


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ExpressionError(f"unexpected character {text[position]!r}", text, position)
        kind = match.lastgroup or ""
        token_text = match.group()
        if kind == "number":
            tokens.append(Token(kind, token_text, position, Decimal(token_text)))
        elif kind == "string":
            tokens.append(Token(kind, token_text, position, _unquote(token_text)))
        elif kind == "name" and token_text.lower() in KEYWORDS:
            tokens.append(Token("keyword", token_text.lower(), position))
        elif kind != "space":
            tokens.append(Token(kind, token_text, position))
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _unquote(quoted: str) -> str:
    body = quoted[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def compile_expression(text: str) -> Predicate:
    """Compile `text` to a predicate over (decoded value, message metadata)."""
    if not text.strip():
        raise ExpressionError("empty expression", text, 0)
    evaluator = _Parser(text).parse()

    def predicate(value: Any, metadata: Mapping[str, Any]) -> bool:
        return _truthy(evaluator(value, metadata))

    return predicate


def compile_path(text: str) -> Evaluator:
    """Compile one field path (`plan.notional`, `reasons[0]`, `$headers.name`) to an evaluator."""
    parser = _Parser(text)
    if parser.current.kind != "name":
        parser.fail("expected a field name")
    evaluator = parser.path()
    if parser.current.kind != "end":
        parser.fail("expected the end of the field name")
    return evaluator


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    # -- helpers ------------------------------------------------------------------------------

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        return self.current.kind == "keyword" and self.current.text in words

    def at_punctuation(self, mark: str) -> bool:
        return self.current.kind == "punctuation" and self.current.text == mark

    def expect_punctuation(self, mark: str) -> None:
        if not self.at_punctuation(mark):
            self.fail(f"expected {mark!r}")
        self.advance()

    def fail(self, message: str) -> NoReturn:
        token = self.current
        found = "the end" if token.kind == "end" else repr(token.text)
        raise ExpressionError(f"{message}, found {found}", self.text, token.column)

    # -- grammar --------------------------------------------------------------------------------

    def parse(self) -> Evaluator:
        evaluator = self.expression()
        if self.current.kind != "end":
            self.fail("expected 'and', 'or' or the end of the expression")
        return evaluator

    def expression(self) -> Evaluator:
        parts = [self.and_expression()]
        while self.at_keyword("or"):
            self.advance()
            parts.append(self.and_expression())
        return parts[0] if len(parts) == 1 else _any_of(parts)

    def and_expression(self) -> Evaluator:
        parts = [self.not_expression()]
        while self.at_keyword("and"):
            self.advance()
            parts.append(self.not_expression())
        return parts[0] if len(parts) == 1 else _all_of(parts)

    def not_expression(self) -> Evaluator:
        if self.at_keyword("not"):
            self.advance()
            inner = self.not_expression()
            return lambda value, metadata: not _truthy(inner(value, metadata))
        return self.comparison()

    def comparison(self) -> Evaluator:
        left = self.operand()
        negate = False
        if self.at_keyword("not"):  # only `not in` may follow an operand
            self.advance()
            negate = True
        token = self.current
        if token.kind == "operator":
            operator = "==" if token.text == "=" else token.text
        elif token.kind == "keyword" and token.text in WORD_OPERATORS:
            operator = token.text
        elif negate:
            self.fail("expected 'in' after 'not'")
        else:
            return left
        if negate and operator != "in":
            self.fail("expected 'in' after 'not'")
        self.advance()
        right = self.operand()
        if operator == "matches":
            return self._matches(left, right, token)
        compare = _OPERATORS[operator]

        def evaluate(value: Any, metadata: Mapping[str, Any]) -> bool:
            return compare(left(value, metadata), right(value, metadata))

        if negate:
            return lambda value, metadata: not evaluate(value, metadata)
        return evaluate

    def _matches(self, left: Evaluator, right: Evaluator, token: Token) -> Evaluator:
        pattern_text = right(None, {})
        if not isinstance(pattern_text, str):
            raise ExpressionError("'matches' takes a string pattern", self.text, token.column)
        try:
            pattern = re.compile(pattern_text)
        except re.error as error:
            raise ExpressionError(f"bad pattern: {error}", self.text, token.column) from None

        def evaluate(value: Any, metadata: Mapping[str, Any]) -> bool:
            subject = left(value, metadata)
            return isinstance(subject, str) and pattern.search(subject) is not None

        return evaluate

    def operand(self) -> Evaluator:
        token = self.current
        if token.kind in ("number", "string"):
            self.advance()
            return _constant(token.value)
        if token.kind == "keyword" and token.text in ("true", "false", "null"):
            self.advance()
            return _constant({"true": True, "false": False, "null": None}[token.text])
        if token.kind == "name":
            return self.path()
        if self.at_punctuation("["):
            return self.list_literal("]")
        if self.at_punctuation("("):
            if self._tuple_ahead():
                return self.list_literal(")")
            self.advance()
            inner = self.expression()
            self.expect_punctuation(")")
            return inner
        self.fail("expected a field, a value or '('")

    def list_literal(self, closing: str) -> Evaluator:
        self.advance()
        items: list[Any] = []
        while not self.at_punctuation(closing):
            items.append(self.literal())
            if not self.at_punctuation(closing):
                self.expect_punctuation(",")
        self.advance()
        return _constant(tuple(items))

    def _tuple_ahead(self) -> bool:
        """`(` starts a list of literals (`("a", "b")`, `()`), not a group (`(a or b)`)."""
        following = self.tokens[self.index + 1]
        if following.kind == "punctuation" and following.text == ")":
            return True
        after = self.tokens[self.index + 2] if self.index + 2 < len(self.tokens) else following
        is_literal = following.kind in ("number", "string") or (
            following.kind == "keyword" and following.text in ("true", "false", "null")
        )
        return is_literal and after.kind == "punctuation" and after.text == ","

    def literal(self) -> Any:
        token = self.current
        if token.kind in ("number", "string"):
            self.advance()
            return token.value
        if token.kind == "keyword" and token.text in ("true", "false", "null"):
            self.advance()
            return {"true": True, "false": False, "null": None}[token.text]
        self.fail("expected a number, a string, true, false or null")

    def path(self) -> Evaluator:
        token = self.advance()
        metadata = token.text.startswith("$")
        head = token.text[1:] if metadata else token.text
        if metadata and head not in METADATA_FIELDS:
            raise ExpressionError(
                f"unknown message field ${head} (one of {', '.join('$' + f for f in sorted(METADATA_FIELDS))})",
                self.text,
                token.column,
            )
        steps: list[str | int] = [head]
        while True:
            if self.at_punctuation(".") and self.tokens[self.index + 1].kind in ("name", "keyword"):
                self.advance()
                steps.append(self.advance().text)
            elif self.at_punctuation("["):
                self.advance()
                index = self.current
                if index.kind == "string":
                    steps.append(index.value)
                elif index.kind == "number" and index.value == index.value.to_integral_value():
                    steps.append(int(index.value))
                else:
                    self.fail("expected a string or an integer index")
                self.advance()
                self.expect_punctuation("]")
            else:
                break
        return _metadata_path(steps) if metadata else _value_path(steps)


# -- evaluation ---------------------------------------------------------------------------------


def _constant(value: Any) -> Evaluator:
    return lambda _value, _metadata: value


def _value_path(steps: Sequence[str | int]) -> Evaluator:
    if len(steps) == 1:
        name = steps[0]
        return lambda value, _metadata: value.get(name) if isinstance(value, dict) else None
    return lambda value, _metadata: _walk(value, steps)


def _metadata_path(steps: Sequence[str | int]) -> Evaluator:
    return lambda _value, metadata: _walk(metadata, steps)


def _walk(current: Any, steps: Sequence[str | int]) -> Any:
    for step in steps:
        if isinstance(current, dict):
            current = current.get(step)  # type: ignore[call-overload]
        elif isinstance(current, list | tuple) and isinstance(step, int) and -len(current) <= step < len(current):
            current = current[step]
        else:
            return None
    return current


def _any_of(parts: Sequence[Evaluator]) -> Evaluator:
    return lambda value, metadata: any(_truthy(part(value, metadata)) for part in parts)


def _all_of(parts: Sequence[Evaluator]) -> Evaluator:
    return lambda value, metadata: all(_truthy(part(value, metadata)) for part in parts)


def _truthy(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float | Decimal):
        return value != 0
    if isinstance(value, str | list | tuple | dict):
        return len(value) > 0
    return True


_NUMBER = (int, float, Decimal)


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | float | str):
        try:
            return Decimal(str(value).strip()) if isinstance(value, str) else Decimal(value)
        except (InvalidOperation, ValueError):
            return None
    return None


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    number = _as_decimal(value)
    if number is not None:
        return datetime.fromtimestamp(float(number) / 1000, UTC)
    return None


def _comparable(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Both sides as one type, or None when they cannot be compared."""
    if left is None or right is None:
        return None
    if isinstance(left, datetime) or isinstance(right, datetime):
        a, b = _as_datetime(left), _as_datetime(right)
        return None if a is None or b is None else (a, b)
    if isinstance(left, bool) or isinstance(right, bool):
        return (left, right) if isinstance(left, bool) and isinstance(right, bool) else None
    if isinstance(left, _NUMBER) or isinstance(right, _NUMBER):
        a_number, b_number = _as_decimal(left), _as_decimal(right)
        return None if a_number is None or b_number is None else (a_number, b_number)
    if isinstance(left, str) and isinstance(right, str):
        return left, right
    return None


def _equal(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is right
    pair = _comparable(left, right)
    if pair is None:
        return bool(left == right)
    return bool(pair[0] == pair[1])


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(left: Any, right: Any) -> bool:
        pair = _comparable(left, right)
        if pair is None:
            return False
        try:
            return test(pair[0], pair[1])
        except TypeError:
            return False

    return compare


def _member(left: Any, right: Any) -> bool:
    if isinstance(right, str):
        return isinstance(left, str) and left in right
    if isinstance(right, list | tuple):
        return any(_equal(left, item) for item in right)
    if isinstance(right, dict):
        return left in right
    return False


def _contains(left: Any, right: Any) -> bool:
    return _member(right, left)


def _starts(left: Any, right: Any) -> bool:
    return isinstance(left, str) and isinstance(right, str) and left.startswith(right)


def _ends(left: Any, right: Any) -> bool:
    return isinstance(left, str) and isinstance(right, str) and left.endswith(right)


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _equal,
    "!=": lambda left, right: not _equal(left, right),
    "<": _ordered(lambda a, b: a < b),
    "<=": _ordered(lambda a, b: a <= b),
    ">": _ordered(lambda a, b: a > b),
    ">=": _ordered(lambda a, b: a >= b),
    "in": _member,
    "contains": _contains,
    "startswith": _starts,
    "endswith": _ends,
}
