"""
Tests for meteord.wire: compact, YAML-1.1-safe JSON encoding and strict decoding.
"""

import enum
import json
import math
import re
import uuid
from datetime import datetime, timezone
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from meteord import wire
from meteord.wire import InvalidJSON, decode_json, encode_json, format_float

# The YAML 1.1 float and int forms (yaml.org/type/float.html, yaml.org/type/int.html, decimal
# only): a float must match the first, or the old client reads it as a string.
YAML11_FLOAT = re.compile(r"[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?")
YAML11_INT = re.compile(r"[-+]?(0|[1-9][0-9_]*)")

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


class FormatFloatTests(SynchronousTestCase):
    """format_float writes floats without exponents and always with a point."""

    def test_small_float_is_positional(self) -> None:
        self.assertEqual(format_float(1e-05), "0.00001")

    def test_large_float_is_positional_with_point(self) -> None:
        self.assertEqual(format_float(1e20), "100000000000000000000.0")

    def test_integral_float_keeps_point(self) -> None:
        self.assertEqual(format_float(3.0), "3.0")

    def test_negative_small_float(self) -> None:
        self.assertEqual(format_float(-2.5e-07), "-0.00000025")

    def test_ordinary_float_is_repr(self) -> None:
        self.assertEqual(format_float(123.456), "123.456")

    def test_negative_zero(self) -> None:
        self.assertEqual(format_float(-0.0), "-0.0")

    def test_non_finite_refused(self) -> None:
        for value in (math.nan, math.inf, -math.inf):
            self.assertRaises(ValueError, format_float, value)

    @given(finite_floats)
    def test_round_trips_exactly_and_is_yaml_safe(self, value: float) -> None:
        text = format_float(value)
        self.assertNotIn("e", text.lower())
        self.assertIn(".", text)
        self.assertTrue(YAML11_FLOAT.fullmatch(text), text)
        parsed = float(text)
        self.assertEqual(parsed, value)
        self.assertEqual(math.copysign(1, parsed), math.copysign(1, value))


class EncodeJSONTests(SynchronousTestCase):
    """encode_json gives compact UTF-8 JSON."""

    def test_compact(self) -> None:
        self.assertEqual(
            encode_json({"a": [1, "x", None, True, False], "b": {}}),
            b'{"a":[1,"x",null,true,false],"b":{}}',
        )

    def test_tuple_is_list(self) -> None:
        self.assertEqual(encode_json((1, 2)), b"[1,2]")

    def test_non_ascii_is_raw_utf8(self) -> None:
        self.assertEqual(encode_json("Zürich ☄"), '"Zürich ☄"'.encode("utf-8"))

    def test_tab_and_controls_escaped(self) -> None:
        encoded = encode_json("a\tb\nc\x00")
        self.assertEqual(encoded, b'"a\\tb\\nc\\u0000"')
        self.assertNotIn(b"\t", encoded)

    def test_quotes_escaped(self) -> None:
        self.assertEqual(encode_json('say "hi" \\'), b'"say \\"hi\\" \\\\"')

    def test_floats_in_structures(self) -> None:
        self.assertEqual(
            encode_json({"v": [1e-05, 1e20, 2.0]}),
            b'{"v":[0.00001,100000000000000000000.0,2.0]}',
        )

    def test_booleans_are_not_numbers(self) -> None:
        self.assertEqual(encode_json([True, 1]), b"[true,1]")

    def test_large_int(self) -> None:
        self.assertEqual(encode_json(2**63 - 1), b"9223372036854775807")

    def test_nan_refused(self) -> None:
        self.assertRaises(ValueError, encode_json, {"x": [math.nan]})

    def test_infinity_refused(self) -> None:
        self.assertRaises(ValueError, encode_json, -math.inf)

    def test_scalar_keys_written_as_strings(self) -> None:
        """Numbers, booleans and None as keys become strings, as with the json module."""
        value = {7: "x", None: 1e20, 2.5: True}
        self.assertEqual(encode_json(value), b'{"7":"x","null":100000000000000000000.0,"2.5":true}')
        self.assertEqual(json.loads(encode_json({1: 1.5})), json.loads(json.dumps({1: 1.5})))

    def test_float_subclasses_written_as_floats(self) -> None:
        """An enum of floats is its float value whichever encoder writes the document."""

        class Half(float, enum.Enum):
            HALF = 0.5

        self.assertEqual(encode_json([Half.HALF]), b"[0.5]")
        self.assertEqual(encode_json([Half.HALF, 1e-05]), b"[0.5,0.00001]")

    def test_enums_and_uuids_written_alike_by_both_encoders(self) -> None:
        """An enum is its value and a UUID its string, with or without a fall-back."""

        class Colour(enum.Enum):
            RED = "red"

        some_id = uuid.UUID("0123456789abcdef0123456789abcdef")
        for extra in ("text", None, 1e-05):
            self.assertEqual(json.loads(encode_json([Colour.RED, some_id, extra])),
                             ["red", str(some_id), extra])

    def test_text_that_looks_like_null_or_an_exponent(self) -> None:
        """Strings holding ``null`` or ``1e-05`` are written as they are."""
        value = {"null": "null", "x": "1e-05 and 2E+7", "n": None}
        self.assertEqual(encode_json(value), b'{"null":"null","x":"1e-05 and 2E+7","n":null}')

    def test_deep_nesting(self) -> None:
        """Deeper than orjson goes: the Python encoder writes it."""
        deep: object = [1.5]
        for _ in range(300):
            deep = [deep]
        self.assertEqual(encode_json(deep), b"[" * 301 + b"1.5" + b"]" * 301)

    def test_datetimes_refused(self) -> None:
        self.assertRaises(TypeError, encode_json, {"t": datetime.now(timezone.utc)})

    @given(json_values)
    def test_fast_and_python_encoders_agree(self, value: object) -> None:
        """The fast path writes exactly what the Python encoder would."""
        out: list[str] = []
        wire._encode(value, out)
        self.assertEqual(encode_json(value), "".join(out).encode("utf-8"))

    @given(json_values)
    def test_without_orjson_the_same_bytes(self, value: object) -> None:
        """Where orjson is not installed the standard library's encoder gives the same."""
        expected = encode_json(value)
        with mock.patch.object(wire, "orjson", None):
            self.assertEqual(encode_json(value), expected)

    def test_without_orjson_the_contract_holds(self) -> None:
        self.patch(wire, "orjson", None)
        self.assertEqual(encode_json({"a": 1e-05, 2: [1e20, None]}),
                         b'{"a":0.00001,"2":[100000000000000000000.0,null]}')
        self.assertRaises(ValueError, encode_json, [math.nan])
        self.assertRaises(TypeError, encode_json, {"x": {1, 2}})

    def test_other_keys_refused(self) -> None:
        self.assertRaises(TypeError, encode_json, {(1, 2): "x"})
        self.assertRaises(TypeError, encode_json, {(1, 2): 1e20})

    def test_exponent_floats_deep_inside(self) -> None:
        """A float that repr() writes with an exponent is positional wherever it is."""
        value = {"a": [{"b": [1e-07]}], "c": "text 1e-5 that is not a number", "d": -1.5e300}
        text = encode_json(value).decode("utf-8")
        self.assertNotRegex(text.replace("text 1e-5", ""), "[0-9][eE][-+]")
        self.assertEqual(json.loads(text), value)

    def test_unknown_type_refused(self) -> None:
        self.assertRaises(TypeError, encode_json, {"x": {1, 2}})

    @given(json_values)
    def test_round_trip(self, value: object) -> None:
        self.assertEqual(decode_json(encode_json(value)), value)

    @given(json_values)
    def test_agrees_with_stdlib(self, value: object) -> None:
        self.assertEqual(json.loads(encode_json(value)), value)

    @given(st.lists(st.integers() | finite_floats))
    def test_every_number_is_yaml_safe(self, values: list) -> None:
        text = encode_json(values).decode("ascii")
        tokens = text[1:-1].split(",") if values else []
        for token in tokens:
            self.assertTrue(YAML11_FLOAT.fullmatch(token) or YAML11_INT.fullmatch(token), token)


class DecodeJSONTests(SynchronousTestCase):
    """decode_json accepts only strict JSON in UTF-8."""

    def test_decodes_object(self) -> None:
        self.assertEqual(
            decode_json(b'{"a": [1, 2.5, "\xc3\xbc", null]}'), {"a": [1, 2.5, "ü", None]}
        )

    def test_accepts_bytearray_and_memoryview(self) -> None:
        self.assertEqual(decode_json(bytearray(b"[1]")), [1])
        self.assertEqual(decode_json(memoryview(b"[1]")), [1])

    def test_top_level_scalar(self) -> None:
        self.assertEqual(decode_json(b"3"), 3)

    def test_invalid_json_is_value_error(self) -> None:
        self.assertTrue(issubclass(InvalidJSON, ValueError))

    def test_bad_utf8(self) -> None:
        e = self.assertRaises(InvalidJSON, decode_json, b'"\xff"')
        self.assertIn("UTF-8", str(e))

    def test_nan_refused(self) -> None:
        e = self.assertRaises(InvalidJSON, decode_json, b"[NaN]")
        self.assertIn("NaN", str(e))

    def test_infinity_refused(self) -> None:
        self.assertRaises(InvalidJSON, decode_json, b"[Infinity]")
        self.assertRaises(InvalidJSON, decode_json, b"[-Infinity]")

    def test_overflowing_number_refused(self) -> None:
        e = self.assertRaises(InvalidJSON, decode_json, b"[1e400]")
        self.assertIn("1e400", str(e))

    def test_duplicate_key_refused(self) -> None:
        e = self.assertRaises(InvalidJSON, decode_json, b'{"a": 1, "a": 2}')
        self.assertIn("'a'", str(e))

    def test_syntax_error_has_position(self) -> None:
        e = self.assertRaises(InvalidJSON, decode_json, b'{"a":\n 1,}')
        self.assertIn("line 2", str(e))

    def test_empty_refused(self) -> None:
        self.assertRaises(InvalidJSON, decode_json, b"")

    def test_trailing_data_refused(self) -> None:
        self.assertRaises(InvalidJSON, decode_json, b"{} {}")

    def test_byte_order_mark_refused(self) -> None:
        self.assertRaises(InvalidJSON, decode_json, b"\xef\xbb\xbf{}")

    def test_deep_nesting_refused(self) -> None:
        self.assertRaises(InvalidJSON, decode_json, b"[" * 100000 + b"]" * 100000)

    def test_overlong_integer_refused(self) -> None:
        self.assertRaises(InvalidJSON, decode_json, b"1" * 5000)

    def test_str_refused(self) -> None:
        self.assertRaises(TypeError, decode_json, "{}")
