"""A safe evaluator for the JEXL subset the FIWARE IoT agents map measures with (``expressionLanguage: jexl``).

``compile_expression`` parses once (a hand-written tokenizer and precedence-climbing parser building closures;
nothing is ever handed to Python's eval/exec/compile) and ``Expression.evaluate`` runs against a dict of variables.

Supported: numbers, 'single'/"double" quoted strings, true, false, null, arrays ``[a, b]``, objects ``{k: v}``;
variables with ``a.b`` and ``a[0]``; ``!`` and unary ``-``; JEXL's binary operators with JEXL's precedence (all left
associative): ``% ^`` over ``* / //`` over ``+ -`` over ``== != < <= > >= in`` over ``&& ||`` (one level, as in
JEXL); ``a ? b : c``; transforms ``value | name(args)`` named as iotagent-node-lib's jexlTransformsMap names them
(see TRANSFORMS; they bind tighter than any operator, like ``.`` and ``[]``).

Values follow JavaScript, which is what the IoT agents run, with these choices:

- A variable that is absent evaluates to None (JEXL's undefined), and None propagates: arithmetic, ``+``,
  ordering comparisons, member access and transforms (except ``typeof`` and ``isnan``) on None give None. So an
  attribute computed from a measure missing in one message comes out None, meaning absent, rather than failing.
  ``==``/``!=``, ``!``, ``&&``, ``||`` and ``?:`` treat None as JavaScript treats undefined (falsy, equal only to None).
- ``==`` and ``!=`` are JavaScript's loose equality (``1 == "1"``); ``in`` and the array transforms use strict.
- Where JavaScript would quietly produce NaN or Infinity (``"abc" * 2``, ``1 / 0``, ``10.0 ^ 999``) evaluation
  raises ExpressionError instead. Numeric text is a number to ``- * / // % ^`` and to ordering against a number,
  but ``+`` with text concatenates (``"1" + 2`` is ``"12"``), as in JavaScript.
- ``/`` always gives a float; ``+ - * // % ^`` give ints when both sides are ints; whole floats stay floats.
  ``round``/``floor``/``ceil``/``parseint`` give ints, ``parsefloat`` floats.
- Strings: as in JEXL, only ``\\\\`` and an escaped enclosing quote are escapes; any other backslash is kept.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

import orjson

from .payload import excerpt, js_string

MAX_LENGTH = 2000
MAX_DEPTH = 50
MAX_EXPONENT = 1000
MAX_STRING = 65536
_MAX_INT = 2**1023  # beyond it a JavaScript number is no longer finite (and a float cannot hold it)

Evaluator = Callable[[Mapping[str, Any]], Any]
Token = tuple[str, Any, int]  # kind ("value", "name", "op", "end"), value, 1-based column


class ExpressionError(ValueError):
    """An expression that cannot compile, or an evaluation that failed; ``position`` is the 1-based column."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(f"column {position}: {message}" if position is not None else message)
        self.message = message
        self.position = position


class _Failure(Exception):
    """An evaluation problem; the operator or transform that meets it adds its column."""


class Expression:
    """A compiled expression: ``evaluate(variables)``; ``names`` are the variables it reads."""

    __slots__ = ("text", "names", "_evaluate")

    def __init__(self, text: str, evaluate: Evaluator, names: frozenset[str]) -> None:
        self.text = text
        self.names = names
        self._evaluate = evaluate

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        try:
            result = self._evaluate(variables)
        except ExpressionError:
            raise
        except RecursionError:
            raise ExpressionError("a value is nested too deeply to evaluate") from None
        except (ArithmeticError, TypeError, ValueError) as exc:  # a safety net: operators report their own failures
            raise ExpressionError(f"evaluation failed: {exc}") from None
        if type(result) is str and len(result) > MAX_STRING:
            raise ExpressionError(f"the result is a string of {len(result)} characters; the limit is {MAX_STRING}")
        return result

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def compile_expression(text: str) -> Expression:
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression has {len(text)} characters; the limit is {MAX_LENGTH}", MAX_LENGTH + 1)
    parser = _Parser(text)
    return Expression(text, parser.parse(), frozenset(parser.names))


# ---------------------------------------------------------------------------------------------------------- values


def _describe(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return f"the string {excerpt(value, 40)}"
    if kind is list:
        return "an array"
    if kind is dict:
        return "an object"
    return js_string(value)


def _truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if value is True:
        return True
    kind = type(value)
    if kind is int:
        return value != 0
    if kind is float:
        return value != 0 and value == value
    if kind is str:
        return value != ""
    return True


_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FLOAT_PREFIX = re.compile(r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")


def _number_from_text(text: str) -> int | float | None:
    """JavaScript's Number(text) for decimal text (int when it has no point or exponent); None when not a number."""
    text = text.strip()
    if len(text) > 400 or not _NUMBER_TEXT.fullmatch(text):
        return None
    if "." in text or "e" in text or "E" in text:
        number = float(text)
        return number if math.isfinite(number) else None
    number = int(text)
    return number if -_MAX_INT < number < _MAX_INT else None


def _number(value: Any, operator_symbol: str | None = None) -> int | float:
    """A number from a number, a boolean or numeric text (as JavaScript coerces); _Failure otherwise."""
    kind = type(value)
    if kind is int or kind is float:
        return value
    if kind is bool:
        return int(value)
    if kind is str:
        number = _number_from_text(value)
        if number is not None:
            return number
    needs = f"'{operator_symbol}' needs numbers" if operator_symbol else "needs a number"
    raise _Failure(f"{needs}, not {_describe(value)}")


def _int_result(number: int) -> int:
    if -_MAX_INT < number < _MAX_INT:
        return number
    raise _Failure("the result is too large")


def _float_result(number: float) -> float:
    if math.isfinite(number):
        return number
    raise _Failure("the result is not a finite number")


def _string_result(text: str) -> str:
    if len(text) > MAX_STRING:
        raise _Failure(f"the result would be a string of {len(text)} characters; the limit is {MAX_STRING}")
    return text


# -------------------------------------------------------------------------------------------------------- operators


def _add(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        return _int_result(a + b)
    if (ta is float or ta is int) and (tb is float or tb is int):
        return _float_result(a + b)
    if a is None or b is None:
        return None
    if ta is str or tb is str:
        if ta is dict or tb is dict:
            raise _Failure(f"'+' cannot join {_describe(a)} and {_describe(b)}")
        return _string_result(js_string(a) + js_string(b))
    return _add(_number(a, "+"), _number(b, "+"))


def _arithmetic(
    symbol: str, int_operation: Callable[[int, int], Any], float_operation: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        ta, tb = type(a), type(b)
        if ta is int and tb is int:
            return _int_result(int_operation(a, b))
        if (ta is float or ta is int) and (tb is float or tb is int):
            return _float_result(float_operation(a, b))
        if a is None or b is None:
            return None
        return apply(_number(a, symbol), _number(b, symbol))

    return apply


def _divide(a: Any, b: Any) -> float:
    if b == 0:
        raise _Failure("division by zero")
    return a / b


def _floor_divide_ints(a: int, b: int) -> int:
    if b == 0:
        raise _Failure("division by zero")
    return a // b


def _floor_divide_floats(a: Any, b: Any) -> float:
    return float(math.floor(_float_result(_divide(a, b))))


def _remainder_ints(a: int, b: int) -> int:
    """JavaScript's %: the sign follows the dividend."""
    if b == 0:
        raise _Failure("division by zero")
    remainder = abs(a) % abs(b)
    return -remainder if a < 0 else remainder


def _remainder_floats(a: Any, b: Any) -> float:
    if b == 0:
        raise _Failure("division by zero")
    return math.fmod(a, b)


def _power_ints(a: int, b: int) -> int | float:
    if abs(b) > MAX_EXPONENT:
        raise _Failure(f"the exponent {b} is beyond the limit of ±{MAX_EXPONENT}")
    if b < 0:
        return _power_floats(a, b)
    if abs(a) > 1 and (abs(a).bit_length() - 1) * b > 1023:
        raise _Failure("the result is too large")
    return a**b


def _power_floats(a: Any, b: Any) -> float:
    if abs(b) > MAX_EXPONENT:
        raise _Failure(f"the exponent {js_string(b)} is beyond the limit of ±{MAX_EXPONENT}")
    try:
        return math.pow(a, b)
    except OverflowError:
        raise _Failure("the result is too large") from None
    except ValueError:
        raise _Failure(f"{js_string(a)} ^ {js_string(b)} has no finite real value") from None


def _ordering(symbol: str, compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool | None]:
    def apply(a: Any, b: Any) -> bool | None:
        ta, tb = type(a), type(b)
        if (ta is int or ta is float) and (tb is int or tb is float):
            return compare(a, b)
        if ta is str and tb is str:
            return compare(a, b)
        if a is None or b is None:
            return None
        return compare(_number(a, symbol), _number(b, symbol))

    return apply


def _loose_equal(a: Any, b: Any) -> bool:
    """JavaScript's == (objects and arrays compare by content here, not identity)."""
    if a is None or b is None:
        return a is b
    ta, tb = type(a), type(b)
    if ta is tb or ((ta is int or ta is float) and (tb is int or tb is float)):
        return bool(a == b)
    if ta is bool:
        return _loose_equal(int(a), b)
    if tb is bool:
        return _loose_equal(a, int(b))
    if ta is str and (tb is int or tb is float):
        return _number_from_text(a) == b
    if tb is str and (ta is int or ta is float):
        return _number_from_text(b) == a
    return False


def _strict_equal(a: Any, b: Any) -> bool:
    """JavaScript's === (objects and arrays by content)."""
    ta, tb = type(a), type(b)
    if (ta is int or ta is float) and (tb is int or tb is float):
        return a == b
    return ta is tb and bool(a == b)


def _contains(a: Any, b: Any) -> bool | None:
    if type(b) is str:
        return None if a is None else js_string(a) in b
    if type(b) is list:
        return any(_strict_equal(a, item) for item in b)
    return None if b is None else False


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": _add,
    "-": _arithmetic("-", operator.sub, operator.sub),
    "*": _arithmetic("*", operator.mul, operator.mul),
    "/": _arithmetic("/", _divide, _divide),
    "//": _arithmetic("//", _floor_divide_ints, _floor_divide_floats),
    "%": _arithmetic("%", _remainder_ints, _remainder_floats),
    "^": _arithmetic("^", _power_ints, _power_floats),
    "==": _loose_equal,
    "!=": lambda a, b: not _loose_equal(a, b),
    "<": _ordering("<", operator.lt),
    "<=": _ordering("<=", operator.le),
    ">": _ordering(">", operator.gt),
    ">=": _ordering(">=", operator.ge),
    "in": _contains,
}
# JEXL's precedence, lowest first; every level is left associative.
_LEVEL = {"&&": 0, "||": 0, "==": 1, "!=": 1, "<": 1, "<=": 1, ">": 1, ">=": 1, "in": 1, "+": 2, "-": 2}
_LEVEL |= {"*": 3, "/": 3, "//": 3, "%": 4, "^": 4}


# ------------------------------------------------------------------------------------------------------- transforms


def _integer(value: Any, default: int) -> int:
    """JavaScript's ToIntegerOrInfinity for index arguments (None -> the default)."""
    if value is None:
        return default
    number = _number(value)
    return int(number) if type(number) is int else int(math.trunc(_float_result(number)))


def _array(value: Any) -> list[Any]:
    if type(value) is not list:
        raise _Failure(f"needs an array, not {_describe(value)}")
    return value


def _parseint(value: Any) -> int:
    text = js_string(value).lstrip()
    sign, digits = 1, text
    if digits[:1] in ("+", "-"):
        sign, digits = (-1 if digits[0] == "-" else 1), digits[1:]
    base, allowed = 10, "0123456789"
    if digits[:2] in ("0x", "0X"):
        base, allowed, digits = 16, "0123456789abcdefABCDEF", digits[2:]
    end = 0
    while end < len(digits) and digits[end] in allowed:
        end += 1
    if not end:
        raise _Failure(f"{excerpt(text, 40)} is not a number")
    if end > 400:
        raise _Failure("the result is too large")
    return _int_result(sign * int(digits[:end], base))


def _parsefloat(value: Any) -> float:
    text = js_string(value).lstrip()
    match = _FLOAT_PREFIX.match(text)
    if match is None:
        raise _Failure(f"{excerpt(text, 40)} is not a number")
    literal = match.group()
    number = math.inf if literal.endswith("Infinity") else float(literal)
    if not math.isfinite(number):
        raise _Failure(f"{excerpt(text, 40)} is not a finite number")
    return number


def _typeof(value: Any) -> str:
    kind = type(value)
    if value is None:
        return "undefined"
    if kind is bool:
        return "boolean"
    if kind is int or kind is float:
        return "number"
    return "string" if kind is str else "object"


def _isnan(value: Any) -> bool:
    kind = type(value)
    if kind is int or kind is bool:
        return False
    if kind is float:
        return value != value
    if value is None:
        return True
    text = js_string(value).strip()
    return text != "" and text.lstrip("+-") != "Infinity" and _number_from_text(text) is None


def _round(value: Any) -> int:
    number = _number(value)
    if type(number) is int:
        return number
    lower = math.floor(_float_result(number))
    return lower + 1 if number - lower >= 0.5 else lower  # JavaScript rounds halves up (towards +infinity)


def _floor(value: Any) -> int:
    number = _number(value)
    return number if type(number) is int else math.floor(_float_result(number))


def _ceil(value: Any) -> int:
    number = _number(value)
    return number if type(number) is int else math.ceil(_float_result(number))


_DECIMALS = Context(prec=200)


def _tofixed(value: Any, decimals: Any = 0) -> str:
    """JavaScript's Number.parseFloat(value).toFixed(decimals): exact binary value, ties away from zero."""
    number = _parsefloat(value)
    places = _integer(decimals, 0)
    if not 0 <= places <= 100:
        raise _Failure(f"the number of decimals must be 0 to 100, not {places}")
    if abs(number) >= 1e21:
        return js_string(number)
    rounded = Decimal(number or 0.0).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP, context=_DECIMALS)
    return format(rounded, "f")


def _substr(value: Any, start: Any = None, length: Any = None) -> str:
    text = js_string(value)
    begin = _integer(start, 0)
    if begin < 0:
        begin = max(len(text) + begin, 0)
    if length is None:
        return text[begin:]
    count = _integer(length, 0)
    return text[begin : begin + count] if count > 0 else ""


def _slice(value: Any, start: Any = None, end: Any = None) -> Any:
    if type(value) is not list and type(value) is not str:
        raise _Failure(f"needs an array or a string, not {_describe(value)}")
    return value[_integer(start, 0) : None if end is None else _integer(end, 0)]


def _split(value: Any, separator: Any = None) -> list[str]:
    text = js_string(value)
    if separator is None:
        return [text]
    separator = js_string(separator)
    return list(text) if separator == "" else text.split(separator)


def _joinarrtostr(value: Any, separator: Any = ",") -> str:
    separator = "," if separator is None else js_string(separator)
    return _string_result(separator.join("" if item is None else js_string(item) for item in _array(value)))


def _concatarr(value: Any, other: Any) -> list[Any]:
    return _array(value) + (other if type(other) is list else [other])


def _lengtharray(value: Any) -> int:
    if type(value) is not list and type(value) is not str:
        raise _Failure(f"needs an array, not {_describe(value)}")
    return len(value)


def _addreduce(value: Any) -> Any:
    items = _array(value)
    if not items:
        raise _Failure("cannot reduce an empty array")
    total = items[0]
    for item in items[1:]:
        total = _add(total, item)
    return total


def _jsonparse(value: Any) -> Any:
    try:
        return orjson.loads(js_string(value))
    except orjson.JSONDecodeError as exc:
        raise _Failure(f"invalid JSON: {exc}") from None


def _jsonstringify(value: Any) -> str:
    try:
        return _string_result(orjson.dumps(value).decode())
    except TypeError as exc:
        raise _Failure(f"cannot write JSON: {exc}") from None


def _mapper(value: Any, values: Any, choices: Any) -> Any:
    """choices[i] for the first values[i] === value; None when there is none."""
    candidates, results = _array(values), _array(choices)
    for index, candidate in enumerate(candidates):
        if _strict_equal(value, candidate):
            return results[index] if index < len(results) else None
    return None


def _thmapper(value: Any, thresholds: Any, choices: Any) -> Any:
    """choices[i] for the first threshold with value <= thresholds[i]; None when there is none."""
    at_most, results = _BINARY["<="], _array(choices)
    for index, threshold in enumerate(_array(thresholds)):
        if at_most(value, threshold):
            return results[index] if index < len(results) else None
    return None


def _replacestr(value: Any, old: Any, new: Any) -> str:
    return _string_result(js_string(value).replace(js_string(old), js_string(new), 1))


def _replaceallstr(value: Any, old: Any, new: Any) -> str:
    return _string_result(js_string(value).replace(js_string(old), js_string(new)))


@dataclass(frozen=True, slots=True)
class _Transform:
    function: Callable[..., Any]
    min_args: int  # besides the value piped in
    max_args: int
    takes_none: bool = False  # whether None reaches the function instead of passing through as None


TRANSFORMS: dict[str, _Transform] = {
    "parseint": _Transform(_parseint, 0, 0),
    "parsefloat": _Transform(_parsefloat, 0, 0),
    "tostring": _Transform(js_string, 0, 0),
    "typeof": _Transform(_typeof, 0, 0, takes_none=True),
    "isnan": _Transform(_isnan, 0, 0, takes_none=True),
    "isarray": _Transform(lambda value: type(value) is list, 0, 0),
    "round": _Transform(_round, 0, 0),
    "floor": _Transform(_floor, 0, 0),
    "ceil": _Transform(_ceil, 0, 0),
    "tofixed": _Transform(_tofixed, 0, 1),
    "substr": _Transform(_substr, 0, 2),
    "slice": _Transform(_slice, 0, 2),
    "trim": _Transform(lambda value: js_string(value).strip(), 0, 0),
    "touppercase": _Transform(lambda value: _string_result(js_string(value).upper()), 0, 0),
    "tolowercase": _Transform(lambda value: js_string(value).lower(), 0, 0),
    "replacestr": _Transform(_replacestr, 2, 2),
    "replaceallstr": _Transform(_replaceallstr, 2, 2),
    "split": _Transform(_split, 1, 1),
    "joinarrtostr": _Transform(_joinarrtostr, 0, 1),
    "concatarr": _Transform(_concatarr, 1, 1),
    "indexOf": _Transform(lambda value, part: js_string(value).find(js_string(part)), 1, 1),
    "length": _Transform(lambda value: len(js_string(value)), 0, 0),
    "lengtharray": _Transform(_lengtharray, 0, 0),
    "addreduce": _Transform(_addreduce, 0, 0),
    "jsonparse": _Transform(_jsonparse, 0, 0),
    "jsonstringify": _Transform(_jsonstringify, 0, 0),
    "mapper": _Transform(_mapper, 2, 2),
    "thmapper": _Transform(_thmapper, 2, 2),
}
_TRANSFORMS_BY_LOWER_NAME = {name.lower(): name for name in TRANSFORMS}


# ------------------------------------------------------------------------------------------------- tree (closures)


def _constant(value: Any) -> Evaluator:
    return lambda variables: value


def _variable(name: str) -> Evaluator:
    return lambda variables: variables.get(name)


def _member(target: Evaluator, name: str) -> Evaluator:
    def evaluate(variables: Mapping[str, Any]) -> Any:
        value = target(variables)
        if type(value) is dict:
            return value.get(name)
        if name == "length" and (type(value) is str or type(value) is list):
            return len(value)
        return None

    return evaluate


def _index(target: Evaluator, key_of: Evaluator) -> Evaluator:
    def evaluate(variables: Mapping[str, Any]) -> Any:
        value, key = target(variables), key_of(variables)
        if key is None:
            return None
        if type(value) is dict:
            return value.get(key if type(key) is str else js_string(key))
        if type(value) is list or type(value) is str:
            if type(key) is float and key.is_integer():
                key = int(key)
            if type(key) is int:
                return value[key] if 0 <= key < len(value) else None
            return len(value) if key == "length" else None
        return None

    return evaluate


def _not(operand: Evaluator) -> Evaluator:
    return lambda variables: not _truthy(operand(variables))


def _negate(operand: Evaluator, column: int) -> Evaluator:
    def evaluate(variables: Mapping[str, Any]) -> Any:
        value = operand(variables)
        if value is None:
            return None
        try:
            return -_number(value, "-")
        except _Failure as failure:
            raise ExpressionError(str(failure), column) from None

    return evaluate


def _conditional(test: Evaluator, consequent: Evaluator, alternate: Evaluator) -> Evaluator:
    return lambda variables: consequent(variables) if _truthy(test(variables)) else alternate(variables)


def _array_literal(items: list[Evaluator]) -> Evaluator:
    return lambda variables: [item(variables) for item in items]


def _object_literal(members: list[tuple[str, Evaluator]]) -> Evaluator:
    return lambda variables: {key: value(variables) for key, value in members}


def _logical_chain(first: Evaluator, rest: list[tuple[str, int, Evaluator]]) -> Evaluator:
    """``a && b || c`` left to right, short-circuiting, giving the deciding operand as JavaScript does."""
    steps = tuple((symbol == "&&", operand) for symbol, _, operand in rest)

    def evaluate(variables: Mapping[str, Any]) -> Any:
        value = first(variables)
        for is_and, operand in steps:
            if _truthy(value) is is_and:
                value = operand(variables)
        return value

    return evaluate


def _binary_chain(first: Evaluator, rest: list[tuple[str, int, Evaluator]]) -> Evaluator:
    """Operators of one precedence level, left to right, in a loop (so long chains do not nest calls)."""
    if len(rest) == 1:
        symbol, column, second = rest[0]
        apply = _BINARY[symbol]

        def evaluate_pair(variables: Mapping[str, Any]) -> Any:
            left, right = first(variables), second(variables)
            try:
                return apply(left, right)
            except _Failure as failure:
                raise ExpressionError(str(failure), column) from None

        return evaluate_pair
    steps = tuple((_BINARY[symbol], column, operand) for symbol, column, operand in rest)

    def evaluate(variables: Mapping[str, Any]) -> Any:
        value = first(variables)
        for apply, column, operand in steps:
            right = operand(variables)
            try:
                value = apply(value, right)
            except _Failure as failure:
                raise ExpressionError(str(failure), column) from None
        return value

    return evaluate


def _transform(subject: Evaluator, name: str, arguments: list[Evaluator], column: int) -> Evaluator:
    spec = TRANSFORMS[name]
    function, takes_none, argument_tuple = spec.function, spec.takes_none, tuple(arguments)

    def evaluate(variables: Mapping[str, Any]) -> Any:
        value = subject(variables)
        if value is None and not takes_none:
            return None
        try:
            if argument_tuple:
                return function(value, *[argument(variables) for argument in argument_tuple])
            return function(value)
        except _Failure as failure:
            raise ExpressionError(f"{name}: {failure}", column) from None

    return evaluate


# ---------------------------------------------------------------------------------------------------------- parsing

_TWO_CHARACTER_OPERATORS = frozenset({"==", "!=", "<=", ">=", "&&", "||", "//"})
_ONE_CHARACTER_OPERATORS = frozenset("+-*/%^<>!?:,.[](){}|")
_KEYWORDS: dict[str, Token] = {"true": ("value", True, 0), "false": ("value", False, 0), "null": ("value", None, 0)}
_HINTS = {"=": "'==' to compare", "&": "'&&'"}


def _is_digit(character: str) -> bool:
    return "0" <= character <= "9"


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    index, end = 0, len(text)
    while index < end:
        character = text[index]
        column = index + 1
        if character in " \t\r\n":
            index += 1
        elif _is_digit(character) or (
            character == "." and index + 1 < end and _is_digit(text[index + 1]) and not _ends_operand(tokens)
        ):
            stop = index
            while stop < end and _is_digit(text[stop]):
                stop += 1
            is_float = stop + 1 < end and text[stop] == "." and _is_digit(text[stop + 1])
            if is_float:
                stop += 1
                while stop < end and _is_digit(text[stop]):
                    stop += 1
            literal = text[index:stop]
            number: int | float = float(literal) if is_float else int(literal)
            if not -_MAX_INT < number < _MAX_INT:  # also catches a float literal that overflows to inf
                raise ExpressionError(f"the number {excerpt(literal, 20)} is too large", column)
            tokens.append(("value", number, column))
            index = stop
        elif character.isalpha() or character in "_$":
            stop = index + 1
            while stop < end and (text[stop].isalnum() or text[stop] in "_$"):
                stop += 1
            word = text[index:stop]
            keyword = _KEYWORDS.get(word)
            if keyword is not None:
                tokens.append((keyword[0], keyword[1], column))
            else:
                tokens.append(("op" if word == "in" else "name", word, column))
            index = stop
        elif character in "'\"":
            index = _read_string(text, index, tokens)
        elif text[index : index + 2] in _TWO_CHARACTER_OPERATORS:
            tokens.append(("op", text[index : index + 2], column))
            index += 2
        elif character in _ONE_CHARACTER_OPERATORS:
            tokens.append(("op", character, column))
            index += 1
        else:
            hint = _HINTS.get(character)
            raise ExpressionError(f"unexpected character {character!r}" + (f" (did you mean {hint}?)" if hint else ""), column)
    tokens.append(("end", None, end + 1))
    return tokens


def _ends_operand(tokens: list[Token]) -> bool:
    if not tokens:
        return False
    kind, value, _ = tokens[-1]
    return kind in ("value", "name") or (kind == "op" and value in (")", "]", "}"))


def _read_string(text: str, start: int, tokens: list[Token]) -> int:
    """Read the string literal opening at ``start``; return the index after its closing quote."""
    quote = text[start]
    parts: list[str] = []
    index = start + 1
    while index < len(text):
        character = text[index]
        if character == "\\" and index + 1 < len(text) and text[index + 1] in (quote, "\\"):
            parts.append(text[index + 1])
            index += 2
        elif character == quote:
            tokens.append(("value", "".join(parts), start + 1))
            return index + 1
        else:
            parts.append(character)
            index += 1
    raise ExpressionError("this string has no closing quote", start + 1)


def _show(token: Token) -> str:
    kind, value, _ = token
    if kind == "end":
        return "the end"
    if kind == "value":
        return _describe(value)
    return f"'{value}'"


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0
        self.names: set[str] = set()

    def parse(self) -> Evaluator:
        if self.tokens[0][0] == "end":
            raise ExpressionError("the expression is empty", 1)
        evaluator = self.expression()
        token = self.tokens[self.index]
        if token[0] != "end":
            raise ExpressionError(f"expected an operator or the end, found {_show(token)}", token[2])
        return evaluator

    def at(self, symbol: str) -> bool:
        kind, value, _ = self.tokens[self.index]
        return kind == "op" and value == symbol

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, symbol: str, purpose: str) -> None:
        if not self.at(symbol):
            token = self.tokens[self.index]
            raise ExpressionError(f"expected '{symbol}' {purpose}, found {_show(token)}", token[2])
        self.index += 1

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"the expression nests deeper than {MAX_DEPTH} levels", self.tokens[self.index][2])

    def expression(self) -> Evaluator:
        self.enter()
        result = self.binary(0)
        if self.at("?"):
            column = self.advance()[2]
            consequent = self.expression()
            self.expect(":", f"for the '?' at column {column}")
            result = _conditional(result, consequent, self.expression())
        self.depth -= 1
        return result

    def level(self) -> int | None:
        kind, value, _ = self.tokens[self.index]
        return _LEVEL.get(value) if kind == "op" else None

    def binary(self, min_level: int) -> Evaluator:
        left = self.unary()
        while True:
            level = self.level()
            if level is None or level < min_level:
                return left
            rest: list[tuple[str, int, Evaluator]] = []
            while self.level() == level:
                _, symbol, column = self.advance()
                rest.append((symbol, column, self.binary(level + 1)))
            left = _logical_chain(left, rest) if level == 0 else _binary_chain(left, rest)

    def unary(self) -> Evaluator:
        kind, symbol, column = self.tokens[self.index]
        if kind != "op" or symbol not in ("!", "-"):
            return self.postfix(self.primary())
        self.advance()
        following = self.tokens[self.index]
        if symbol == "-" and following[0] == "value" and type(following[1]) in (int, float):
            self.advance()  # a negative number literal, as JEXL reads it
            return self.postfix(_constant(-following[1]))
        self.enter()
        operand = self.unary()
        self.depth -= 1
        return _not(operand) if symbol == "!" else _negate(operand, column)

    def primary(self) -> Evaluator:
        kind, value, column = self.advance()
        if kind == "value":
            return _constant(value)
        if kind == "name":
            if self.at("("):
                raise ExpressionError(
                    f"'{value}(...)' is a function call, which JEXL mappings do not have; a transform is written "
                    f"value | {value}(...)",
                    column,
                )
            self.names.add(value)
            return _variable(value)
        if kind == "op" and value == "(":
            inner = self.expression()
            self.expect(")", f"to close the '(' at column {column}")
            return inner
        if kind == "op" and value == "[":
            return _array_literal(self.items("]", column))
        if kind == "op" and value == "{":
            return self.object_literal(column)
        self.index -= 1
        previous = self.tokens[self.index - 1] if self.index else None
        if previous is not None and previous[0] == "op" and previous[1] not in (")", "]", "}"):
            found = "" if kind == "end" else f", found {_show((kind, value, column))}"
            raise ExpressionError(f"expected an operand after '{previous[1]}'{found}", column)
        raise ExpressionError(f"expected an operand, found {_show((kind, value, column))}", column)

    def items(self, closing: str, open_column: int) -> list[Evaluator]:
        items: list[Evaluator] = []
        if self.at(closing):
            self.advance()
            return items
        while True:
            items.append(self.expression())
            if self.at(","):
                self.advance()
                continue
            self.expect(closing, f"or ',' to close the '{'(' if closing == ')' else '['}' at column {open_column}")
            return items

    def object_literal(self, open_column: int) -> Evaluator:
        members: list[tuple[str, Evaluator]] = []
        if self.at("}"):
            self.advance()
            return _object_literal(members)
        while True:
            kind, key, column = self.advance()
            if not (kind == "name" or (kind == "value" and type(key) is str)):
                raise ExpressionError(f"expected a key (a name or a string), found {_show((kind, key, column))}", column)
            self.expect(":", f"after the key '{key}'")
            members.append((key, self.expression()))
            if self.at(","):
                self.advance()
                continue
            self.expect("}", f"or ',' to close the '{{' at column {open_column}")
            return _object_literal(members)

    def postfix(self, evaluator: Evaluator) -> Evaluator:
        while True:
            kind, symbol, column = self.tokens[self.index]
            if kind != "op":
                return evaluator
            if symbol == ".":
                self.advance()
                name_kind, name, name_column = self.advance()
                if name_kind != "name":
                    raise ExpressionError(
                        f"expected a property name after '.', found {_show(self.tokens[self.index - 1])}", name_column
                    )
                evaluator = _member(evaluator, name)
            elif symbol == "[":
                self.advance()
                if self.at("."):
                    raise ExpressionError("filter expressions ([.name ...]) are not supported", self.tokens[self.index][2])
                key = self.expression()
                self.expect("]", f"to close the '[' at column {column}")
                evaluator = _index(evaluator, key)
            elif symbol == "|":
                self.advance()
                evaluator = self.transform(evaluator)
            else:
                return evaluator

    def transform(self, subject: Evaluator) -> Evaluator:
        kind, name, column = self.advance()
        if kind != "name":
            raise ExpressionError(f"expected a transform name after '|', found {_show((kind, name, column))}", column)
        if name not in TRANSFORMS:
            known = _TRANSFORMS_BY_LOWER_NAME.get(name.lower())
            raise ExpressionError(f"unknown transform '{name}'" + (f" (did you mean '{known}'?)" if known else ""), column)
        arguments: list[Evaluator] = []
        if self.at("("):
            arguments = self.items(")", self.advance()[2])
        spec = TRANSFORMS[name]
        if not spec.min_args <= len(arguments) <= spec.max_args:
            expected = str(spec.min_args) if spec.min_args == spec.max_args else f"{spec.min_args} to {spec.max_args}"
            raise ExpressionError(f"transform '{name}' takes {expected} argument(s), got {len(arguments)}", column)
        return _transform(subject, name, arguments, column)
