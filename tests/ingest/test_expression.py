import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityops.ingest.expression import MAX_DEPTH, MAX_LENGTH, ExpressionError, compile_expression


def run(text, **variables):
    return compile_expression(text).evaluate(variables)


def same(actual, expected):
    """Equal and of the same type (1 and 1.0 differ here)."""
    return type(actual) is type(expected) and actual == expected


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("temperature * 9 / 5 + 32", {"temperature": 15}, 59.0),
        ("level / 100", {"level": 85.3}, 0.853),
        ('status == "1" ? "on" : "off"', {"status": "1"}, "on"),
        ('status == "1" ? "on" : "off"', {"status": 1}, "on"),
        ('status == "1" ? "on" : "off"', {"status": "0"}, "off"),
        ("value | parsefloat", {"value": "21.5"}, 21.5),
        ("(a + b) / 2", {"a": 3, "b": 4}, 3.5),
        ('lat + "," + lon', {"lat": 40.4, "lon": -3.7}, "40.4,-3.7"),
        ("longitude+', '+latitude", {"longitude": 2.0, "latitude": 1.9}, "2, 1.9"),
        ("location | split(', ')[1] | parsefloat()", {"location": "40.4165, -3.70256"}, -3.70256),
        ("variable | trim | replacestr('hello','hi')", {"variable": "  hello world  "}, "hi world"),
        (
            "{coordinates: [longitude,latitude], type: 'Point'}",
            {"longitude": 1, "latitude": 2},
            {"coordinates": [1, 2], "type": "Point"},
        ),
        ("level * 0.897", {"level": 100}, 89.7),
    ],
)
def test_iot_agent_examples(text, variables, expected):
    assert same(run(text, **variables), expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("10 - 2 - 3", 5),
        ("2 * 3 % 2", 2),  # % binds tighter than * in JEXL
        ("2 ^ 3 ^ 2", 64),  # left associative, as JEXL parses it
        ("-2 ^ 2", 4),
        ("- 2 ^ 2", 4),
        ("2 * -3", -6),
        ("1 + 2 == 3", True),
        ("1 < 2 == true", True),
        ("!0 == true", True),
        ("1 || 0 && 0", 0),  # && and || share one level in JEXL: (1 || 0) && 0
        ("0 && 1 || 2", 2),
        ("1 ? 2 : 3 ? 4 : 5", 2),
        ("0 ? 2 : 0 ? 4 : 5", 5),
        ("1 + 1 ? 'yes' : 'no'", "yes"),
        ("[1, 2][1] + 1", 3),
        ("'ab' | length * 2", 4),  # a transform binds tighter than an operator
    ],
)
def test_precedence_and_associativity_follow_jexl(text, expected):
    assert same(run(text), expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7 / 2", 3.5),
        ("6 / 2", 3.0),
        ("2 + 2", 4),
        ("2.0 + 2", 4.0),
        ("0.1 + 0.2", 0.30000000000000004),
        ("3 * 4", 12),
        ("1.5 * 2", 3.0),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7.5 // 2", 3.0),
        ("-7 % 3", -1),
        ("7 % -3", 1),
        ("5.5 % 2", 1.5),
        ("2 ^ 10", 1024),
        ("2 ^ -1", 0.5),
        ("4 ^ 0.5", 2.0),
        (".5 + 1", 1.5),
        ('"3" * "4"', 12),
        ('"1.5" * 2', 3.0),
        ('" 7 " - 2', 5),
        ('"1" + 2', "12"),
        ('1 + "2"', "12"),
        ('1.5 + "x"', "1.5x"),
        ('2.0 + ""', "2"),
        ("true + 1", 2),
        ('-"3"', -3),
        ("'a' + true", "atrue"),
        ("'n: ' + [1, 2]", "n: 1,2"),
    ],
)
def test_numbers_and_strings_behave_as_in_javascript(text, expected):
    assert same(run(text), expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("missing * 2", None),
        ("'a' + null", None),
        ("missing + 'x'", None),
        ("'x' + missing", None),
        ("-missing", None),
        ("missing > 1", None),
        ("missing in 'abc'", None),
        ("missing.b.c", None),
        ("missing[0]", None),
        ("missing | parsefloat | tofixed(2)", None),
        ("missing == null", True),
        ("missing == 0", False),
        ("missing != 1", True),
        ("!missing", True),
        ("missing ? 1 : 2", 2),
        ("missing || 'default'", "default"),
        ("missing | typeof", "undefined"),
        ("missing | isnan", True),
        ("[missing, 1]", [None, 1]),
    ],
)
def test_an_absent_variable_is_none_and_propagates(text, expected):
    assert same(run(text), expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 == '1'", True),
        ("'1.0' == 1", True),
        ("true == 1", True),
        ("'abc' == 0", False),
        ("null == 0", False),
        ("null == null", True),
        ("[1, 2] == [1, 2]", True),
        ("'a' != 'b'", True),
        ("'b' < 'a'", False),
        ("'10' > 9", True),
        ("2 <= 2.0", True),
        ("'1' in ['1', 2]", True),
        ("1 in ['1']", False),
        ("true in [1]", False),
        ("'b' in 'abc'", True),
        ("1 in '123'", True),
        ("'a' in {a: 1}", False),
    ],
)
def test_comparisons(text, expected):
    assert same(run(text), expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0 || 'x'", "x"),
        ("'a' && 0", 0),
        ("'' || null", None),
        ("[] && 'arrays are truthy'", "arrays are truthy"),
        ("false && 1 / 0", False),
        ("true || 1 / 0", True),
        ("0 ? 1 / 0 : 'safe'", "safe"),
    ],
)
def test_logic_returns_the_deciding_operand_and_short_circuits(text, expected):
    assert same(run(text), expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'it\\'s'", "it's"),
        ('"say \\"hi\\""', 'say "hi"'),
        ("'a\\\\b'", "a\\b"),
        ("'a\\nb'", "a\\nb"),  # as in JEXL, only quotes and backslashes are escaped
        ("'\"'", '"'),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[1, 'a', [true]]", [1, "a", [True]]),
        ("[]", []),
        ("{}", {}),
        ("{a: 1, 'b c': [2]}", {"a": 1, "b c": [2]}),
        ("0.25", 0.25),
        ("007", 7),
    ],
)
def test_literals(text, expected):
    assert same(run(text), expected)


def test_object_literals_are_fresh_each_evaluation():
    expression = compile_expression("{a: [x]}")
    first = expression.evaluate({"x": 1})
    first["a"].append(2)
    assert expression.evaluate({"x": 1}) == {"a": [1]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("o.b.c", 3),
        ("o['b'].c", 3),
        ("o.missing", None),
        ("o.b.c.d", None),
        ("l[0]", 10),
        ("l[1.0]", 20),
        ("l[-1]", None),
        ("l[5]", None),
        ("l[i]", 20),
        ("l.length", 2),
        ("l['length']", 2),
        ("s[1]", "b"),
        ("s.length", 3),
        ("n.x", None),
        ("d[1]", "one"),
        ("d[null]", None),
        ("$x + _y", 3),
    ],
)
def test_member_and_index_access(text, expected):
    variables = {"o": {"b": {"c": 3}}, "l": [10, 20], "i": 1, "s": "abc", "n": 5, "d": {"1": "one"}, "$x": 1, "_y": 2}
    assert same(compile_expression(text).evaluate(variables), expected)


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("x | parseint", {"x": "42"}, 42),
        ("x | parseint", {"x": "  -42px"}, -42),
        ("x | parseint", {"x": "0x1A"}, 26),
        ("x | parseint", {"x": 12.7}, 12),
        ("x | parsefloat", {"x": "3.14abc"}, 3.14),
        ("x | parsefloat", {"x": "  -1e3"}, -1000.0),
        ("x | parsefloat", {"x": 7}, 7.0),
        ("x | tostring", {"x": 15.0}, "15"),
        ("x | tostring", {"x": [1, 2]}, "1,2"),
        ("x | typeof", {"x": 1.5}, "number"),
        ("x | typeof", {"x": "a"}, "string"),
        ("x | typeof", {"x": True}, "boolean"),
        ("x | typeof", {"x": [1]}, "object"),
        ("x | isnan", {"x": "abc"}, True),
        ("x | isnan", {"x": " 12 "}, False),
        ("x | isnan", {"x": 1}, False),
        ("x | isarray", {"x": [1]}, True),
        ("x | isarray", {"x": "1"}, False),
        ("x | round", {"x": 2.5}, 3),
        ("x | round", {"x": -2.5}, -2),
        ("x | round", {"x": 2.4}, 2),
        ("x | round", {"x": 0.49999999999999994}, 0),
        ("x | round", {"x": "2.5"}, 3),
        ("x | round", {"x": 7}, 7),
        ("x | floor", {"x": -1.5}, -2),
        ("x | ceil", {"x": 1.2}, 2),
        ("x | tofixed(2)", {"x": 1.005}, "1.00"),
        ("x | tofixed(2)", {"x": 2.345}, "2.35"),
        ("x | tofixed", {"x": 2.5}, "3"),
        ("x | tofixed", {"x": -2.5}, "-3"),
        ("x | tofixed(3)", {"x": "3.14159"}, "3.142"),
        ("x | tofixed(2)", {"x": 1e21}, "1e+21"),
        ("x | tofixed(2)", {"x": -0.0001}, "-0.00"),
        ("x | tofixed(2)", {"x": 0}, "0.00"),
        ("x | substr(1, 3)", {"x": "hello"}, "ell"),
        ("x | substr(-3)", {"x": "hello"}, "llo"),
        ("x | substr(1)", {"x": "hello"}, "ello"),
        ("x | substr(1, -1)", {"x": "hello"}, ""),
        ("x | substr(0, 2)", {"x": 12345}, "12"),
        ("x | slice(1, -1)", {"x": [1, 2, 3, 4]}, [2, 3]),
        ("x | slice(1, 3)", {"x": "hello"}, "el"),
        ("x | slice(2)", {"x": [1, 2, 3]}, [3]),
        ("x | trim", {"x": " a b "}, "a b"),
        ("x | touppercase", {"x": "abc"}, "ABC"),
        ("x | tolowercase", {"x": "ABC"}, "abc"),
        ("x | replacestr('-', '+')", {"x": "a-b-c"}, "a+b-c"),
        ("x | replaceallstr('-', '+')", {"x": "a-b-c"}, "a+b+c"),
        ("x | split(',')", {"x": "a,b"}, ["a", "b"]),
        ("x | split('')", {"x": "ab"}, ["a", "b"]),
        ("x | joinarrtostr", {"x": [1, None, "x"]}, "1,,x"),
        ("x | joinarrtostr('-')", {"x": [1, 2.0]}, "1-2"),
        ("x | concatarr([2, 3])", {"x": [1]}, [1, 2, 3]),
        ("x | concatarr(4)", {"x": [1]}, [1, 4]),
        ("x | indexOf('l')", {"x": "hello"}, 2),
        ("x | indexOf(3)", {"x": 12345}, 2),
        ("x | indexOf('z')", {"x": "hello"}, -1),
        ("x | length", {"x": "hello"}, 5),
        ("x | length", {"x": 12345}, 5),
        ("x | length", {"x": [1, 2]}, 3),  # String([1, 2]) is "1,2", as in the IoT agent
        ("x | lengtharray", {"x": [1, 2, 3]}, 3),
        ("x | addreduce", {"x": [1, 2, 3]}, 6),
        ("x | addreduce", {"x": [1.5, 2]}, 3.5),
        ("x | addreduce", {"x": ["a", "b"]}, "ab"),
        ("x | addreduce", {"x": [1, "2"]}, "12"),
        ("x | jsonparse", {"x": '{"a": [1]}'}, {"a": [1]}),
        ("x | jsonstringify", {"x": {"a": 1}}, '{"a":1}'),
        ("x | mapper(['a', 'b'], [1, 2])", {"x": "b"}, 2),
        ("x | mapper(['a', 'b'], [1, 2])", {"x": "z"}, None),
        ("x | mapper([1, 2], ['one'])", {"x": 2}, None),
        ("x | thmapper([10, 20, 30], ['low', 'mid', 'high'])", {"x": 15}, "mid"),
        ("x | thmapper([10, 20, 30], ['low', 'mid', 'high'])", {"x": 35}, None),
        ("x | trim | touppercase | split(' ')", {"x": " a b "}, ["A", "B"]),
    ],
)
def test_transforms(text, variables, expected):
    assert same(compile_expression(text).evaluate(variables), expected)


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("abc * ", 7, "expected an operand after '*'"),
        ("a * * b", 5, "expected an operand after '*', found '*'"),
        ("a +", 4, "expected an operand after '+'"),
        ("temp * )", 8, "expected an operand after '*', found ')'"),
        (")", 1, "expected an operand, found ')'"),
        ("", 1, "the expression is empty"),
        ("   ", 1, "the expression is empty"),
        ("(a", 3, "expected ')' to close the '(' at column 1, found the end"),
        ("a b", 3, "expected an operator or the end, found 'b'"),
        ("1e3", 2, "expected an operator or the end, found 'e3'"),
        ("foo(1)", 1, "'foo(...)' is a function call, which JEXL mappings do not have; a transform is written value | foo(...)"),
        ("x | toFixed(2)", 5, "unknown transform 'toFixed' (did you mean 'tofixed'?)"),
        ("x | toUpperCase", 5, "unknown transform 'toUpperCase' (did you mean 'touppercase'?)"),
        ("x | abs", 5, "unknown transform 'abs'"),
        ("x | substr(1, 2, 3)", 5, "transform 'substr' takes 0 to 2 argument(s), got 3"),
        ("x | split", 5, "transform 'split' takes 1 argument(s), got 0"),
        ("x | 5", 5, "expected a transform name after '|', found 5"),
        ("x | split(','", 14, "expected ')' or ',' to close the '(' at column 10, found the end"),
        ("a = 1", 3, "unexpected character '=' (did you mean '==' to compare?)"),
        ("a & b", 3, "unexpected character '&' (did you mean '&&'?)"),
        ("a # b", 3, "unexpected character '#'"),
        ("'abc", 1, "this string has no closing quote"),
        ("a + 'it\\'", 5, "this string has no closing quote"),
        ("a ? b", 6, "expected ':' for the '?' at column 3, found the end"),
        ("[1, 2", 6, "expected ']' or ',' to close the '[' at column 1, found the end"),
        ("{a 1}", 4, "expected ':' after the key 'a', found 1"),
        ("{1: 2}", 2, "expected a key (a name or a string), found 1"),
        ("{a: 1", 6, "expected '}' or ',' to close the '{' at column 1, found the end"),
        ("a[.b == 1]", 3, "filter expressions ([.name ...]) are not supported"),
        ("a.5", 3, "expected a property name after '.', found 5"),
        ("a[1", 4, "expected ']' to close the '[' at column 2, found the end"),
        ("1" * 400, 1, "the number '11111111111111111111'... (400 characters) is too large"),
    ],
)
def test_compile_errors_give_the_column_and_the_reason(text, column, message):
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    assert (caught.value.position, caught.value.message) == (column, message)
    assert str(caught.value) == f"column {column}: {message}"


def test_expression_error_is_a_value_error():
    assert issubclass(ExpressionError, ValueError)


@pytest.mark.parametrize(
    ("text", "variables", "column", "message"),
    [
        ('"abc" * 2', {}, 7, "'*' needs numbers, not the string 'abc'"),
        ("a / b", {"a": 1, "b": 0}, 3, "division by zero"),
        ("a // 0", {"a": 1}, 3, "division by zero"),
        ("a % 0.0", {"a": 1}, 3, "division by zero"),
        ("10.0 ^ 999", {}, 6, "the result is too large"),
        ("9 ^ 999", {}, 3, "the result is too large"),
        ("2 ^ 1001", {}, 3, "the exponent 1001 is beyond the limit of ±1000"),
        ("2 ^ -1000.5", {}, 3, "the exponent -1000.5 is beyond the limit of ±1000"),
        ("(-8) ^ 0.5", {}, 6, "-8 ^ 0.5 has no finite real value"),
        ("0 ^ -1", {}, 3, "0 ^ -1 has no finite real value"),
        ("x * y", {"x": 2**1000, "y": 2**100}, 3, "the result is too large"),
        ("x * 10", {"x": 1e308}, 3, "the result is not a finite number"),
        ("x * 2", {"x": [1]}, 3, "'*' needs numbers, not an array"),
        ("x + 1", {"x": {"a": 1}}, 3, "'+' needs numbers, not an object"),
        ("x + 's'", {"x": {}}, 3, "'+' cannot join an object and the string 's'"),
        ("x < 1", {"x": "abc"}, 3, "'<' needs numbers, not the string 'abc'"),
        ("x < [1]", {"x": 1}, 3, "'<' needs numbers, not an array"),
        ("1 + -x", {"x": "a"}, 5, "'-' needs numbers, not the string 'a'"),
        ("x | parseint", {"x": "px"}, 5, "parseint: 'px' is not a number"),
        ("x | parsefloat", {"x": "Infinity"}, 5, "parsefloat: 'Infinity' is not a finite number"),
        ("x | addreduce", {"x": []}, 5, "addreduce: cannot reduce an empty array"),
        ("x | addreduce", {"x": 5}, 5, "addreduce: needs an array, not 5"),
        ("x | round", {"x": "abc"}, 5, "round: needs a number, not the string 'abc'"),
        ("x | tofixed(101)", {"x": 1}, 5, "tofixed: the number of decimals must be 0 to 100, not 101"),
        ("x | substr('a')", {"x": "abc"}, 5, "substr: needs a number, not the string 'a'"),
        ("x | slice(1)", {"x": 5}, 5, "slice: needs an array or a string, not 5"),
        ("x | mapper(1, [2])", {"x": 1}, 5, "mapper: needs an array, not 1"),
        ("x | jsonparse", {"x": "{"}, 5, "jsonparse: invalid JSON: unexpected end of data: line 1 column 2 (char 1)"),
        (
            "a + b",
            {"a": "x" * 40000, "b": "y" * 40000},
            3,
            "the result would be a string of 80000 characters; the limit is 65536",
        ),
        (
            "x | replaceallstr('a', 'aaaa')",
            {"x": "a" * 20000},
            5,
            "replaceallstr: the result would be a string of 80000 characters; the limit is 65536",
        ),
    ],
)
def test_evaluation_errors_give_the_operator_column_and_the_reason(text, variables, column, message):
    expression = compile_expression(text)
    with pytest.raises(ExpressionError) as caught:
        expression.evaluate(variables)
    assert (caught.value.position, caught.value.message) == (column, message)


def test_a_string_result_over_the_limit_is_an_error():
    with pytest.raises(ExpressionError, match="^the result is a string of 70000 characters; the limit is 65536$"):
        run("x", x="a" * 70000)
    assert run("x", x="a" * 65536) == "a" * 65536


def test_length_limit():
    assert run("x" * MAX_LENGTH) is None
    with pytest.raises(ExpressionError) as caught:
        compile_expression("x" * (MAX_LENGTH + 1))
    assert caught.value.message == f"the expression has {MAX_LENGTH + 1} characters; the limit is {MAX_LENGTH}"


@pytest.mark.parametrize(
    ("opening", "closing"),
    [("(", ")"), ("[", "]"), ("!", ""), ("-", ""), ("x | substr(", ")"), ("{a: ", "}"), ("1 ? 2 : ", "")],
)
def test_nesting_limit(opening, closing):
    depth = MAX_DEPTH - 1  # the whole expression is one level
    compile_expression(opening * depth + "x" + closing * depth)
    with pytest.raises(ExpressionError, match=f"nests deeper than {MAX_DEPTH} levels"):
        compile_expression(opening * (depth + 1) + "x" + closing * (depth + 1))


def test_long_operator_chains_are_not_nesting():
    assert run("+".join(["1"] * 999)) == 999
    assert run(" && ".join(["1"] * 300)) == 1
    assert run("x" + " | trim" * 250, x=" a ") == "a"


def test_names_are_the_top_level_variables_read():
    expression = compile_expression("a.b + c[d] | substr(e) ? {k: f, 'q': 'lit'} : [g, a]")
    assert expression.names == frozenset("acdefg")
    assert compile_expression("1 + 'x'").names == frozenset()


def test_an_expression_is_reusable_with_different_variables():
    expression = compile_expression("t * 2")
    assert [expression.evaluate({"t": n}) for n in (1, 2, None)] == [2, 4, None]


TOKENS = [
    "a", "b", "s", "l", "o", "missing", "1", "0", "2.5", "'x'", '"1"', "true", "null", "+", "-", "*", "/", "//", "%", "^",
    "==", "!=", "<", ">=", "&&", "||", "in", "!", "?", ":", "(", ")", "[", "]", "{", "}", ",", ".", "|", "parseint",
    "tofixed(1)", "split(',')", "addreduce", "length", "round", "jsonparse", "substr(1)", "=", "'",
]  # fmt: skip
VARIABLES = {"a": 3, "b": "4", "s": "x,y", "l": [1, 2], "o": {"a": 1}}


def compile_and_run_or_fail_cleanly(text):
    try:
        expression = compile_expression(text)
    except ExpressionError as error:
        assert error.position is None or 1 <= error.position <= len(text) + 1
        return
    for variables in ({}, VARIABLES):
        try:
            expression.evaluate(variables)
        except ExpressionError:
            pass


@given(st.text(max_size=100))
def test_any_text_compiles_or_raises_an_expression_error(text):
    compile_and_run_or_fail_cleanly(text)


@given(st.lists(st.sampled_from(TOKENS), max_size=25))
def test_token_soup_compiles_or_raises_and_evaluates_or_raises(tokens):
    compile_and_run_or_fail_cleanly(" ".join(tokens))


@given(st.integers(-(10**12), 10**12), st.integers(-(10**12), 10**12))
def test_integer_arithmetic_matches_exact_arithmetic(x, y):
    assert same(run("x + y", x=x, y=y), x + y)
    assert same(run("x - y", x=x, y=y), x - y)
    assert same(run("x * y", x=x, y=y), x * y)
    if y:
        assert same(run("x / y", x=x, y=y), x / y)
        assert same(run("x // y", x=x, y=y), x // y)


@given(st.text(max_size=30), st.integers())
def test_adding_a_number_to_text_concatenates_its_decimal_form(text, number):
    if abs(number) < 10**21:
        assert run("s + n", s=text, n=number) == text + str(number)
