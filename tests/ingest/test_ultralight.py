import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityops.ingest.payload import MeasureGroup, PayloadError, js_string, parse_timestamp
from cityops.ingest.ultralight import encode_command, format_measures, parse_command_result, parse_measures

NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:"


def test_one_group_of_measures():
    assert parse_measures(b"t|15|h|40") == [MeasureGroup({"t": "15", "h": "40"}, None)]


def test_groups_are_separated_by_hash_and_keep_their_order():
    groups = parse_measures("t|15#t|16|h|1")
    assert [g.values for g in groups] == [{"t": "15"}, {"t": "16", "h": "1"}]


def test_a_leading_timestamp_belongs_to_its_group_only():
    groups = parse_measures("2016-06-13T00:35:30Z|lux|10#lux|11")
    assert groups == [MeasureGroup({"lux": "10"}, "2016-06-13T00:35:30Z"), MeasureGroup({"lux": "11"}, None)]


@pytest.mark.parametrize("stamp", ["2016-06-13T00:35:30.123+02:00", "20160613T003530Z", "2016-06-13T00:35:30"])
def test_timestamps_are_kept_as_sent(stamp):
    assert parse_measures(f"{stamp}|t|1")[0].timestamp == stamp


def test_a_time_instant_measure_is_the_group_timestamp_and_not_a_value():
    [group] = parse_measures("t|1|TimeInstant|2020-01-02T03:04:05Z")
    assert group == MeasureGroup({"t": "1"}, "2020-01-02T03:04:05Z")


def test_a_time_instant_measure_overrides_the_leading_timestamp():
    [group] = parse_measures("2016-06-13T00:35:30Z|t|1|TimeInstant|2020-01-02T03:04:05Z")
    assert group.timestamp == "2020-01-02T03:04:05Z"


def test_values_stay_text_and_may_be_empty():
    assert parse_measures("a|1.50|b||c|true")[0].values == {"a": "1.50", "b": "", "c": "true"}


def test_a_repeated_name_keeps_its_last_value():
    assert parse_measures("t|1|t|2")[0].values == {"t": "2"}


@pytest.mark.parametrize("payload", ["t|1\n", "t|1\r\n", "  t|1  ", "t|1#", "#t|1", "t|1##", "t|1#\n"])
def test_surrounding_whitespace_and_empty_groups_are_ignored(payload):
    assert parse_measures(payload) == [MeasureGroup({"t": "1"}, None)]


@pytest.mark.parametrize("name", ["temp_1", "a-b", "a.b", "urn:x", "X9"])
def test_allowed_name_characters(name):
    assert parse_measures(f"{name}|1")[0].values == {name: "1"}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("", "empty payload: no measures"),
        ("  \n", "empty payload: no measures"),
        ("#", "empty payload: no measures"),
        ("a|1#a|1|b", "group 2: 'a|1|b' has a name without a value"),
        ("t", "group 1: 't' has a name without a value"),
        ("2016-06-13T00:35:30Z|a|1|b", "group 1: '2016-06-13T00:35:30Z|a|1|b' has a name without a value"),
        ("2016-13-45T00:35:30Z|a|1", "group 1: '2016-13-45T00:35:30Z|a|1' has a name without a value"),
        ("|t|1", "group 1: '|t|1' starts with '|' (an empty measure name)"),
        ("t|1||2", "group 1: a measure name is empty"),
        ("2016-06-13T00:35:30Z", "group 1: timestamp '2016-06-13T00:35:30Z' has no measures after it"),
        ("t|1|b c|2", "group 1: measure name 'b c' has the character ' ' (allowed: letters, digits and _ - . :)"),
        ("t|1#té|2", "group 2: measure name 'té' has the character 'é'"),
        ("t|1|a/b|2", "group 1: measure name 'a/b' has the character '/'"),
        ("TimeInstant|yesterday|t|1", "group 1: TimeInstant: timestamp 'yesterday' is not an ISO 8601 date-time"),
    ],
)
def test_malformed_payloads_say_precisely_why(payload, message):
    with pytest.raises(PayloadError) as caught:
        parse_measures(payload)
    assert str(caught.value).startswith(message)


def test_non_utf8_bytes_are_refused_with_their_offset():
    with pytest.raises(PayloadError, match=r"payload is not UTF-8: byte 0xff at offset 2"):
        parse_measures(b"t|\xff")


def test_oversized_payloads_are_refused():
    with pytest.raises(PayloadError, match=r"^payload of 11 bytes exceeds the limit of 10$"):
        parse_measures(b"t|123456789", max_bytes=10)
    with pytest.raises(PayloadError, match=r"^payload of 70000 bytes exceeds the limit of 65536$"):
        parse_measures("t|" + "1" * 69998)
    assert parse_measures("t|" + "1" * 65534)[0].values["t"] == "1" * 65534


def test_the_limit_counts_utf8_bytes_of_text():
    with pytest.raises(PayloadError, match="payload of 12 bytes exceeds the limit of 11"):
        parse_measures("t|" + "é" * 5, max_bytes=11)


def test_format_measures_writes_values_as_javascript_would():
    assert format_measures({"t": 15.0, "h": 40, "on": True, "x": 0.5, "s": "abc"}) == "t|15|h|40|on|true|x|0.5|s|abc"
    assert format_measures({"t": "1"}, "2016-06-13T00:35:30Z") == "2016-06-13T00:35:30Z|t|1"


@pytest.mark.parametrize("values", [{"a|b": 1}, {"t": "1|2"}, {"t": "1#2"}, {"": 1}])
def test_format_measures_refuses_what_ul_cannot_carry(values):
    with pytest.raises(PayloadError):
        format_measures(values)


names = st.text(NAME_ALPHABET, min_size=1, max_size=12).filter(lambda n: n != "TimeInstant" and not n[:4].isdigit())
values = st.text(max_size=20).filter(lambda v: "|" not in v and "#" not in v and v == v.strip())
timestamps = st.datetimes().map(lambda d: d.isoformat() + "Z")


@given(
    st.lists(st.tuples(st.dictionaries(names, values, min_size=1, max_size=6), st.none() | timestamps), min_size=1, max_size=4)
)
def test_format_then_parse_gives_the_values_back(groups):
    payload = "#".join(format_measures(measures, stamp) for measures, stamp in groups)
    assert parse_measures(payload.encode()) == [MeasureGroup(measures, stamp) for measures, stamp in groups]


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_a_payload_error(text):
    try:
        groups = parse_measures(text)
    except PayloadError:
        return
    assert groups and all(isinstance(g, MeasureGroup) and g.values for g in groups)


@given(st.text("t|#1:-T2Z. \n", max_size=60))
def test_ul_shaped_text_parses_or_raises_a_payload_error(text):
    try:
        parse_measures(text)
    except PayloadError:
        pass


@given(st.binary(max_size=100))
def test_any_bytes_parse_or_raise_a_payload_error(data):
    try:
        parse_measures(data)
    except PayloadError:
        pass


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"param1": 1, "param2": 2}, "weatherStation167@ping|param1=1|param2=2"),
        ("left", "weatherStation167@ping|left"),
        (22, "weatherStation167@ping|22"),
        (2.0, "weatherStation167@ping|2"),
        (True, "weatherStation167@ping|true"),
        ("a=1|b=2", "weatherStation167@ping|a=1|b=2"),
        (None, "weatherStation167@ping"),
        ("", "weatherStation167@ping"),
        ({}, "weatherStation167@ping"),
    ],
)
def test_encode_command(params, expected):
    assert encode_command("weatherStation167", "ping", params) == expected


@pytest.mark.parametrize(
    ("device_id", "command", "params"),
    [
        ("a@b", "ping", None),
        ("dev", "pi|ng", None),
        ("", "ping", None),
        ("dev", "", None),
        ("dev", "ping", {"a=b": 1}),
        ("dev", "ping", {"a": "1|2"}),
        ("dev", "ping", "x#y"),
    ],
)
def test_encode_command_refuses_what_ul_cannot_carry(device_id, command, params):
    with pytest.raises(PayloadError):
        encode_command(device_id, command, params)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"weatherStation167@ping|Ping ok", ("weatherStation167", "ping", "Ping ok")),
        ("dev@cmd|a|b\n", ("dev", "cmd", "a|b")),
        ("dev@cmd|", ("dev", "cmd", "")),
    ],
)
def test_parse_command_result(payload, expected):
    assert parse_command_result(payload) == expected


@pytest.mark.parametrize("payload", ["dev@cmd", "devcmd|ok", "@cmd|ok", "dev@|ok", "dev@c@d|ok", ""])
def test_malformed_command_results_are_refused(payload):
    with pytest.raises(PayloadError, match="is not of the form <device_id>@<command>|<result>"):
        parse_command_result(payload)


def test_command_results_share_the_size_and_encoding_checks():
    with pytest.raises(PayloadError, match="exceeds the limit"):
        parse_command_result(b"d@c|" + b"x" * 100, max_bytes=50)
    with pytest.raises(PayloadError, match="not UTF-8"):
        parse_command_result(b"d@c|\xc3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-06-13T00:35:30Z", "2016-06-13T00:35:30Z"),
        ("2016-06-13T02:35:30+02:00", "2016-06-13T00:35:30Z"),
        ("2016-06-13T00:35:30.5-01:00", "2016-06-13T01:35:30.500000Z"),
        ("2016-06-13T00:35:30", "2016-06-13T00:35:30Z"),
        ("20160613T003530Z", "2016-06-13T00:35:30Z"),
        ("0999-01-01T00:00:00Z", "0999-01-01T00:00:00Z"),
    ],
)
def test_parse_timestamp_normalises_to_utc(text, expected):
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2016-06-13", "timestamp '2016-06-13' is not an ISO 8601 date-time"),
        ("2016-06-13T25:00:00Z", "is not an ISO 8601 date-time"),
        ("soon", "timestamp 'soon' is not an ISO 8601 date-time"),
        ("", "timestamp '' is not an ISO 8601 date-time"),
        (1465778130, "timestamp 1465778130 is not a string"),
        ("0001-01-01T00:00:00+01:00", "is out of range in UTC"),
    ],
)
def test_parse_timestamp_refuses_with_a_reason(text, message):
    with pytest.raises(PayloadError, match=message):
        parse_timestamp(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (15.0, "15"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (123.456, "123.456"),
        (-2.5e30, "-2.5e+30"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (10**22, "1e+22"),
        (None, "null"),
        (False, "false"),
        ([1, None, [2, "a"]], "1,,2,a"),
        ({"a": 1}, "[object Object]"),
    ],
)
def test_js_string(value, text):
    assert js_string(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_js_string_of_a_float_reads_back_as_the_same_float(number):
    assert float(js_string(number)) == number
