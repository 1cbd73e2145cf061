from datetime import datetime, timezone

import pytest

from controller.stamps import parse_stamp, utc_stamp


def test_a_stamp_round_trips_to_the_second_or_the_microsecond() -> None:
    when = datetime(2026, 11, 27, 23, 40, 5, 123456, tzinfo=timezone.utc)
    assert utc_stamp(when) == "2026-11-27T23:40:05Z"
    assert utc_stamp(when, micro=True) == "2026-11-27T23:40:05.123456Z"
    assert parse_stamp(utc_stamp(when, micro=True)) == when


def test_a_naive_stamp_reads_as_utc_and_junk_raises_value_error() -> None:
    assert parse_stamp("2026-01-01T00:00:00").timestamp() == parse_stamp("2026-01-01T00:00:00Z").timestamp()
    with pytest.raises(ValueError):
        parse_stamp("yesterday")
