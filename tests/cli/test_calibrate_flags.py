"""calibrate's flags: bounded work, no silent default set, each bad value shown once."""

from __future__ import annotations

import pytest

from controller.cli.main import main


@pytest.mark.parametrize("argv, shown", [
    (["--splits", "100000000"], "--splits must be from 2 to 100000 (got 100000000)"),  # ran for hours
    (["--metrics", ","], "--metrics names no statistic (got ',')"),  # silently meant every statistic
    (["--false-alarm", "2"], "--false-alarm must be between 0 and 1 (exclusive), got 2.0"),
])
def test_calibrate_refuses_before_any_work(tmp_path, capsys, argv, shown):
    assert main(["calibrate", "qs", *argv, "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(shown) and err.count("got") == 1, err  # "got 2.0 (got 2.0)" before
