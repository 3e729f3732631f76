"""Record format: exact round trip (property-based), clear errors for bad bytes and events."""

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hgcal_jax.data import records

finite_f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def events(draw):
    cells = draw(hnp.arrays(np.int64, st.integers(0, 300),
                            elements=st.integers(0, 2**31 - 1), unique=True))
    energies = draw(hnp.arrays(np.float32, len(cells), elements=finite_f32))
    truth = {}
    for name in records.TRUTH_FIELDS:
        kind = records.TRUTH_DTYPE[name].kind
        truth[name] = draw(st.integers(-(2**31), 2**31 - 1) if kind == "i" else
                           st.floats(width=32, allow_nan=True))
    return records.make_event(cells, energies, truth)


@settings(max_examples=200, deadline=None)
@given(events())
def test_parse_inverts_serialize(event):
    data = records.serialize(event)
    back = records.parse(data)
    assert back == event
    np.testing.assert_array_equal(back.cells, event.cells)
    assert back.energies.tobytes() == event.energies.tobytes()  # bit-exact, -0.0 included
    assert records.parse_truth(data)["event_id"] == event.truth["event_id"]


def test_make_event_sorts_and_merges_duplicates():
    event = records.make_event([9, 2, 9, 5], [1.0, 2.0, 3.0, -0.5], {"event_id": 4, "energy": 50.0})
    np.testing.assert_array_equal(event.cells, [2, 5, 9])
    np.testing.assert_array_equal(event.energies, [2.0, -0.5, 4.0])  # negative noise is kept
    assert np.isnan(event.truth["eta"]) and event.truth["pid"] == -1


@pytest.mark.parametrize("energies, message", [([1.0, np.nan], "event 7: 1 hits with NaN"),
                                               ([np.inf, 1.0], "event 7: 1 hits with NaN")])
def test_bad_energies_name_the_event(energies, message):
    with pytest.raises(records.RecordError, match=message):
        records.make_event([1, 2], energies, {"event_id": 7})


def test_unknown_truth_field_is_an_error():
    with pytest.raises(records.RecordError, match=r"unknown truth fields \['energi'\]"):
        records.make_event([1], [1.0], {"event_id": 1, "energi": 5.0})


def test_corrupt_bytes_are_named():
    data = records.serialize(records.make_event([1, 5, 9], [1, 2, 3], {"event_id": 1}))
    with pytest.raises(records.RecordError, match="shard-x\\[3\\]: .* expected"):
        records.parse(data[:-3], "shard-x[3]")
    with pytest.raises(records.RecordError, match="not an event record"):
        records.parse(b"XXXX" + data[4:], "r")
    bumped = bytearray(data)
    bumped[4] = 9  # version
    with pytest.raises(records.RecordError, match="record version 9"):
        records.parse(bytes(bumped), "r")


def test_empty_event_round_trips():
    event = records.make_event([], [], {"event_id": 3})
    assert records.parse(records.serialize(event)) == event
