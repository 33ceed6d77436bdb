"""Java String.hashCode and Kafka's murmur2 on both backends."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nativelogs import NATIVE_MISSING

from mqstore import _purepy, native

# Kafka's UtilsTest.testMurmur2 values
MURMUR2 = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
    (b"", 275646681),
]

# java.lang.String.hashCode
JAVA = [("", 0), ("hello", 99162322), ("TagA", 2598919), ("a", 97),
        ("\u00e9t\u00e9", 227742), ("\U0001f600", 1772899), ("\ud800", 55296)]


@pytest.mark.parametrize(("data", "expected"), MURMUR2)
def test_murmur2_kafka_vectors(impl, data, expected):
    assert impl.murmur2(data) == expected
    assert impl.murmur2(bytearray(data)) == expected
    assert impl.murmur2(memoryview(b"#" + data)[1:]) == expected


@pytest.mark.parametrize(("text", "expected"), JAVA)
def test_java_string_hash_vectors(impl, text, expected):
    assert impl.java_string_hash(text) == expected


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=200), text=st.text(max_size=60))
def test_native_equals_python_on_random_input(data, text):
    assert native.murmur2(data) == _purepy.murmur2(data)
    assert native.java_string_hash(text) == _purepy.java_string_hash(text)


def test_java_string_hashes_of_a_run_of_strings(impl):
    texts = [t for t, _ in JAVA]
    assert impl.java_string_hashes(texts).tolist() == [h for _, h in JAVA]
    assert impl.java_string_hashes(iter(["a", "b"])).tolist() == [97, 98]
    assert impl.java_string_hashes([]).dtype == "int64"
    with pytest.raises(TypeError):
        impl.java_string_hashes(["a", b"b"])
    with pytest.raises(TypeError):
        impl.java_string_hash(b"b")


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(max_size=20), max_size=30))
def test_java_string_hashes_native_equals_python(texts):
    assert native.java_string_hashes(texts).tolist() == \
        _purepy.java_string_hashes(texts).tolist()
