"""The drift-slot contract: every DriftRunner passes these.

Override ``runner`` to return a fresh runner that polls quickly (a tick every ~0.05 s, no start-up
delay). The kit starts it with a :class:`~matih_lite.contracts.slots.DriftPlan` whose ``check_due``
records each call, as the monitoring domain's schedule would be called, and checks when and how.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from matih_lite.contracts.slots import DriftPlan, DriftWindow


class RecordingPlan:
    """A plan whose ``check_due`` records each ``now`` it is called with; ``work`` runs inside the call."""

    def __init__(self, work: Callable[[int], Any] | None = None) -> None:
        self.calls: list[int] = []
        self.active = 0
        self.overlapped = False
        self.finished = 0
        self.work = work
        self.lock = threading.Lock()

    def check_due(self, now: int) -> list[dict[str, Any]]:
        with self.lock:
            self.active += 1
            self.overlapped |= self.active > 1
            self.calls.append(now)
        try:
            if self.work is not None:
                self.work(now)
            return [{"deployment": "d", "window": "1h", "end": now}]
        finally:
            with self.lock:
                self.active -= 1
                self.finished += 1

    def record(self, report: Any) -> dict[str, Any] | None:
        return dict(report)

    def plan(self) -> DriftPlan:
        return DriftPlan(windows=(DriftWindow("1h", 3_600_000),), grace_ms=60_000, check_due=self.check_due,
                         record=self.record)


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class DriftRunnerContract:
    """Override ``runner`` to return a fresh runner ticking about every 0.05 s."""

    @pytest.fixture
    def runner(self) -> Any:
        raise NotImplementedError("override the 'runner' fixture to build your drift runner, polling fast")

    def test_checks_windows_on_schedule_with_the_clock(self, runner):
        recording = RecordingPlan()
        before = int(time.time() * 1000)
        runner.start(recording.plan())
        try:
            assert wait_until(lambda: len(recording.calls) >= 3), "check_due was not called on schedule"
            assert runner.health().ok
        finally:
            runner.stop()
        after = int(time.time() * 1000)
        assert recording.calls == sorted(recording.calls)
        assert all(before <= now <= after for now in recording.calls), "check_due must be given the time now"

    def test_catches_up_after_a_pause(self, runner):
        """Stopped and started again, the runner asks for what is due *now*: the schedule catches up from there."""
        recording = RecordingPlan()
        runner.start(recording.plan())
        assert wait_until(lambda: len(recording.calls) >= 1)
        runner.stop()
        paused_at = int(time.time() * 1000)
        time.sleep(0.3)
        seen = len(recording.calls)
        time.sleep(0.2)
        assert len(recording.calls) == seen, "a stopped runner must not check"
        runner.start(recording.plan())
        try:
            assert wait_until(lambda: len(recording.calls) > seen)
        finally:
            runner.stop()
        assert recording.calls[seen] >= paused_at + 300

    def test_stop_lets_a_check_in_progress_finish(self, runner):
        started = threading.Event()
        release = threading.Event()

        def slow(now: int) -> None:
            started.set()
            release.wait(5)

        recording = RecordingPlan(slow)
        runner.start(recording.plan())
        assert started.wait(10), "check_due was not called"
        threading.Timer(0.3, release.set).start()
        t0 = time.monotonic()
        runner.stop()
        assert time.monotonic() - t0 >= 0.25, "stop returned before the check in progress finished"
        assert recording.active == 0 and recording.finished == len(recording.calls)
        calls = len(recording.calls)
        time.sleep(0.3)
        assert len(recording.calls) == calls, "no check may start after stop"

    def test_checks_never_overlap_and_start_is_idempotent(self, runner):
        recording = RecordingPlan(lambda now: time.sleep(0.12))  # slower than the poll interval
        plan = recording.plan()
        runner.start(plan)
        runner.start(plan)
        try:
            assert wait_until(lambda: len(recording.calls) >= 3)
        finally:
            runner.stop()
        assert not recording.overlapped, "two checks ran at once"

    def test_a_failing_check_is_reported_and_the_schedule_goes_on(self, runner):
        def boom(now: int) -> None:
            raise RuntimeError("window store unreachable")

        recording = RecordingPlan(boom)
        runner.start(recording.plan())
        try:
            assert wait_until(lambda: len(recording.calls) >= 2), "a failing check stopped the schedule"
            health = runner.health()
            assert "window store unreachable" in health.detail
        finally:
            runner.stop()

    def test_stop_and_close_are_idempotent(self, runner):
        runner.stop()
        runner.start(RecordingPlan().plan())
        runner.stop()
        runner.stop()
        runner.close()
