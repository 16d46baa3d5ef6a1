"""Nightly scans with the ``schedule`` library: no overlap, clean stop, next run logged.

The job runs in a worker thread; when the trigger fires while the previous
scan is still running, the run is skipped and logged ("skipped: previous scan
still running"). :meth:`Nightly.run_forever` installs SIGINT/SIGTERM handlers
that set a stop event; the loop then waits for a running scan to finish and
returns.

Time: ``schedule`` reads ``datetime.datetime.now()`` through its module global
``schedule.datetime``; tests replace that global with a fake module whose
``datetime.now()`` they control. ``clock`` (a ``() -> float``) and
``sleep`` are only used for the loop's own waiting.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable

import schedule

log = logging.getLogger("domain_finder.scheduler")
SKIPPED_MSG = "skipped: previous scan still running"


class Nightly:
    """Runs ``job`` every day at ``at`` (``HH:MM``, local time) on its own ``schedule.Scheduler``.

    Attributes:
        runs: how many times the job was started.
        skipped: how many triggers were skipped because a run was still going.
        stop_event: set it (or send SIGINT/SIGTERM) to end :meth:`run_forever`.
    """

    def __init__(self, at: str = "02:00", job: Callable[[], object] | None = None, clock: Callable[[], float] | None = None,
                 scheduler: schedule.Scheduler | None = None, sleep: Callable[[float], object] | None = None):
        if job is None:
            raise ValueError("Nightly needs a job")
        self.at, self.job = at, job
        self.clock = clock or time.monotonic
        self.scheduler = scheduler if scheduler is not None else schedule.Scheduler()
        self.stop_event = threading.Event()
        self._sleep = sleep
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.skipped = 0
        self.last_error: BaseException | None = None
        self.scheduler.every().day.at(at).do(self._trigger)
        self.log_next_run()

    @property
    def next_run(self):
        return self.scheduler.next_run

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def log_next_run(self) -> None:
        log.info("next scan at %s", self.scheduler.next_run)

    def _run_job(self) -> None:
        try:
            self.job()
        except BaseException as e:  # noqa: BLE001 - one failed night must not end the schedule
            self.last_error = e
            log.exception("scan failed: %s", e)

    def _trigger(self) -> None:
        if self.running:
            self.skipped += 1
            log.warning(SKIPPED_MSG)
        else:
            self.runs += 1
            log.info("starting scan #%d", self.runs)
            self._thread = threading.Thread(target=self._run_job, name="domain-finder-scan", daemon=True)
            self._thread.start()
        # _schedule_next_run runs after this returns; log from there.

    def tick(self) -> None:
        """Runs pending triggers once and logs the next run time if it moved."""
        before = self.scheduler.next_run
        self.scheduler.run_pending()
        if self.scheduler.next_run != before:
            self.log_next_run()

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for a running scan; True when none is running anymore."""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return not self.running

    def stop(self) -> None:
        self.stop_event.set()

    def run_forever(self, poll_s: float = 30.0, install_signals: bool = True) -> None:
        """Ticks until :attr:`stop_event` is set, then waits for the running scan and returns."""
        old = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, lambda signum, frame: self._on_signal(signum))
        try:
            while not self.stop_event.is_set():
                self.tick()
                if self._sleep is not None:
                    self._sleep(poll_s)
                else:
                    self.stop_event.wait(poll_s)
            if self.running:
                log.info("stopping: waiting for the running scan to finish")
            self.wait()
            log.info("scheduler stopped")
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.stop_event.set()
