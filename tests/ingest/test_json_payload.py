import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityops.ingest.json_payload import encode_command, parse_command_result, parse_measures
from cityops.ingest.payload import MeasureGroup, PayloadError


def test_an_object_is_one_group_and_values_keep_their_json_types():
    payload = b'{"t": 15, "h": 40.5, "on": true, "name": "x", "none": null, "pos": [1, 2], "o": {"a": 1}}'
    assert parse_measures(payload) == [
        MeasureGroup({"t": 15, "h": 40.5, "on": True, "name": "x", "none": None, "pos": [1, 2], "o": {"a": 1}}, None)
    ]


def test_an_array_is_several_groups_each_with_its_own_time_instant():
    payload = '[{"t": 1, "TimeInstant": "2016-06-13T00:35:30Z"}, {"t": 2}, {"t": 3, "TimeInstant": "2016-06-13T01:00:00+02:00"}]'
    assert parse_measures(payload) == [
        MeasureGroup({"t": 1}, "2016-06-13T00:35:30Z"),
        MeasureGroup({"t": 2}, None),
        MeasureGroup({"t": 3}, "2016-06-13T01:00:00+02:00"),
    ]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{", "invalid JSON: unexpected end of data"),
        (b"", "invalid JSON"),
        (b'{"t": 1,}', "invalid JSON"),
        (b"3", "payload is a number; expected an object of measures or an array of them"),
        (b'"t"', "payload is a string; expected"),
        (b"null", "payload is null; expected"),
        (b"{}", "payload: an empty object has no measures"),
        (b"[]", "payload is an empty array: no measures"),
        (b'[{"t": 1}, 2]', "group 2: is a number; expected an object of measures"),
        (b'[{"t": 1}, [{"t": 1}]]', "group 2: is an array; expected an object of measures"),
        (b'[{"t": 1}, {}]', "group 2: an empty object has no measures"),
        (b'{"a b": 1}', "payload: measure name 'a b' has the character ' '"),
        (b'{"": 1}', "payload: a measure name is empty"),
        (b'[{"t": 1}, {"t<": 1}]', "group 2: measure name 't<' has the character '<'"),
        (b'{"t": 1, "TimeInstant": "noon"}', "payload: TimeInstant: timestamp 'noon' is not an ISO 8601 date-time"),
        (b'{"t": 1, "TimeInstant": 1465778130}', "payload: TimeInstant: timestamp 1465778130 is not a string"),
        (b'{"t": 1, "TimeInstant": null}', "payload: TimeInstant: timestamp null is not a string"),
        (b'{"TimeInstant": "2016-06-13T00:35:30Z"}', "payload: has a TimeInstant but no measures"),
    ],
)
def test_refused_payloads_say_why(payload, message):
    with pytest.raises(PayloadError) as caught:
        parse_measures(payload)
    assert str(caught.value).startswith(message)


def test_non_utf8_bytes_are_named_as_such():
    with pytest.raises(PayloadError, match="payload is not UTF-8: byte 0xff at offset 7"):
        parse_measures(b'{"a": "\xff"}')


def test_oversized_payloads_are_refused_before_parsing():
    with pytest.raises(PayloadError, match="^payload of 12 bytes exceeds the limit of 10$"):
        parse_measures(b'{"t": "abc"}', max_bytes=10)
    with pytest.raises(PayloadError, match="exceeds the limit of 10"):
        parse_measures('{"t": "abc"}', max_bytes=10)
    with pytest.raises(PayloadError, match="exceeds the limit of 65536"):
        parse_measures(orjson.dumps({"t": "x" * 65536}))


def test_encode_command():
    assert encode_command("ping", {"data": 22}) == b'{"ping":{"data":22}}'
    assert encode_command("turn", "left") == b'{"turn":"left"}'
    assert encode_command("reset", None) == b'{"reset":null}'


@pytest.mark.parametrize(("command", "params"), [("", 1), ("ping", object())])
def test_encode_command_refuses_what_json_cannot_carry(command, params):
    with pytest.raises(PayloadError):
        encode_command(command, params)


def test_parse_command_result():
    assert parse_command_result(b'{"ping": "1234567890"}') == {"ping": "1234567890"}
    assert parse_command_result('{"a": {"ok": true}, "b": 2}') == {"a": {"ok": True}, "b": 2}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[]", "command result is an array; expected an object of command -> result"),
        (b"{}", "command result is an empty object"),
        (b'{"a b": 1}', "command result: measure name 'a b'"),
        (b"nope", "invalid JSON"),
    ],
)
def test_malformed_command_results_are_refused(payload, message):
    with pytest.raises(PayloadError, match=message):
        parse_command_result(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)
names = st.text("abcXYZ019_-.:", min_size=1, max_size=8).filter(lambda n: n != "TimeInstant")


@given(st.lists(st.dictionaries(names, json_values, min_size=1, max_size=5), min_size=1, max_size=3))
def test_dumped_measures_parse_back_unchanged(groups):
    assert parse_measures(orjson.dumps(groups)) == [MeasureGroup(group, None) for group in groups]


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_a_payload_error(text):
    try:
        parse_measures(text)
    except PayloadError:
        pass


@given(json_values)
def test_any_json_parses_or_raises_a_payload_error(value):
    try:
        parse_measures(orjson.dumps(value))
    except PayloadError:
        pass
