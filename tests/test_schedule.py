"""Nightly scheduler with a fake clock (``schedule.datetime`` replaced by a controllable module)."""
from __future__ import annotations

import datetime as real_datetime
import logging
import threading
import types

import pytest
import schedule

from crawler.scheduler import SKIPPED_MSG, Nightly


class FakeClock:
    def __init__(self, start: real_datetime.datetime):
        self.now = start

    def advance(self, **kw) -> None:
        self.now += real_datetime.timedelta(**kw)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock(real_datetime.datetime(2026, 1, 1, 12, 0, 0))

    class FakeDatetime(real_datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return fake.now if tz is None else fake.now.replace(tzinfo=tz)

    mod = types.SimpleNamespace(**{k: getattr(real_datetime, k) for k in dir(real_datetime) if not k.startswith("__")})
    mod.datetime = FakeDatetime
    monkeypatch.setattr(schedule, "datetime", mod)
    return fake


def test_one_run_per_day(clock, caplog):
    caplog.set_level(logging.INFO, logger="domain_finder.scheduler")
    done = []
    n = Nightly(at="02:00", job=lambda: done.append(clock.now))
    assert n.next_run == real_datetime.datetime(2026, 1, 2, 2, 0)
    assert "next scan at 2026-01-02 02:00:00" in caplog.text
    for _ in range(3 * 24 * 4):  # three days in 15-minute steps
        clock.advance(minutes=15)
        n.tick()
        n.wait(5)
    assert n.runs == 3 and len(done) == 3
    assert [d.date() for d in done] == [real_datetime.date(2026, 1, d) for d in (2, 3, 4)]
    assert all(d.hour == 2 for d in done)
    assert n.next_run == real_datetime.datetime(2026, 1, 5, 2, 0)
    assert "next scan at 2026-01-05 02:00:00" in caplog.text


def test_overlap_is_skipped_and_logged(clock, caplog):
    caplog.set_level(logging.INFO, logger="domain_finder.scheduler")
    release = threading.Event()
    started = []
    n = Nightly(at="02:00", job=lambda: (started.append(1), release.wait(10)))
    clock.advance(hours=14, minutes=1)  # Jan 2 02:01
    n.tick()
    assert n.runs == 1 and n.running
    clock.advance(days=1)  # next night, the first scan still running
    n.tick()
    assert n.runs == 1 and n.skipped == 1
    assert SKIPPED_MSG in caplog.text
    release.set()
    assert n.wait(5)
    clock.advance(days=1)
    n.tick()
    n.wait(5)
    assert n.runs == 2 and len(started) == 2


def test_stop_event_ends_loop_after_running_scan(clock):
    release = threading.Event()
    finished = []
    ticks = []

    def job():
        release.wait(10)
        finished.append(1)

    n = Nightly(at="02:00", job=job)

    def fake_sleep(_):
        ticks.append(1)
        clock.advance(hours=1)
        if len(ticks) == 15:  # the scan started at 02:00; ask to stop while it runs
            assert n.running
            n.stop()
            threading.Timer(0.3, release.set).start()

    loop = threading.Thread(target=n.run_forever, kwargs={"poll_s": 1, "install_signals": False})
    n._sleep = fake_sleep
    loop.start()
    loop.join(10)
    assert not loop.is_alive()
    assert finished == [1] and n.runs == 1  # waited for the running scan


def test_sigterm_handler_sets_stop(clock):
    import os
    import signal

    n = Nightly(at="02:00", job=lambda: None)
    calls = []

    def fake_sleep(_):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    n._sleep = fake_sleep
    prev = signal.getsignal(signal.SIGTERM)
    n.run_forever(poll_s=0)
    assert n.stop_event.is_set()
    assert signal.getsignal(signal.SIGTERM) == prev  # handlers restored
