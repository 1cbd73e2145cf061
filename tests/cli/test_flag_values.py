"""Flag values: bounded work, no silent defaults, one duration syntax, each bad value shown once."""

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


def test_events_reads_durations_as_every_verb_does_and_refuses_a_missing_log(tmp_path, capsys):
    """--since took s/m/h/d but not 500ms or plain seconds, unlike every other duration flag (which took no
    d); a mistyped --events DIR printed "no events" with exit 0."""
    (tmp_path / "events" / "qs").mkdir(parents=True)
    for since in ("90", "500ms", "2d", "1000d"):
        assert main(["events", "qs", "--events", str(tmp_path / "events"), "--since", since]) == 0, since
    assert main(["events", "qs", "--events", str(tmp_path / "event"), "--store", str(tmp_path / "s")]) == 2
    assert "field --events: not a directory" in capsys.readouterr().err
    assert main(["wait", "qs", "--for", "phase=Healthy", "--timeout", "2d", "--store", str(tmp_path / "s")]) == 1


def test_the_sync_loop_refuses_yaml_it_would_not_print(tmp_path, capsys):
    """-o yaml was silently ignored in loop mode (the loop prints text or JSON lines)."""
    assert main(["sync", "--repo", str(tmp_path), "--branch", "main", "-o", "yaml", "--store", str(tmp_path)]) == 2
    assert "-o yaml needs --once" in capsys.readouterr().err
