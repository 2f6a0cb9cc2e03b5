"""Slow session-fixture setups started in the background as soon as collection is done.

A few fixtures make a server the way a user would (a server container, setup.yml, deploy v1:
a minute or more, mostly waiting for Ansible's round trips), long before their tests run. A
conftest registers such a setup here (`register`) when its tests are selected, and
tests/conftest.py starts them all (`launch`); the fixture then takes
the result (`take(...).result()`: the value, or the setup's own exception re-raised), or makes
it itself when nothing was started (GREENLIGHT_TEST_SERIAL=1, or a selection without the tests
that start it). A setup nobody took is cleaned up at the end of the session (`stop_all`, called
by tests/conftest.py), also after Ctrl-C: its abort hook (e.g. removing the server container)
ends a setup still running. Setups run one after the other (each waits for the one started
before it): with the Molecule scenarios and the foreground tests, that is already enough
concurrency for two cores, and the first one started is the first one needed.
"""
from __future__ import annotations

import os
import threading
import time
import typing as t

_JOBS: dict[str, "Job"] = {}
_STARTED: list["Job"] = []  # every job of the session, in start order (taken ones too)
_LOCK = threading.Lock()


def enabled() -> bool:
    """Same switch as the Molecule background runs (tests/molecule_runner.py)."""
    return os.environ.get("GREENLIGHT_TEST_SERIAL", "") in ("", "0")


class Job:
    def __init__(self, name: str, make: t.Callable[["Job"], t.Any],
                 cleanup: t.Callable[[t.Any], None] | None, after: "Job | None" = None) -> None:
        self.name = name
        self.after = after
        self.make = make
        self.cleanup = cleanup
        self.abort: t.Callable[[], None] | None = None  # set by make() once there is something to abort
        self.cancelled = False
        self.value: t.Any = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, name="prewarm-" + name, daemon=True)

    def _run(self) -> None:
        if self.after is not None:
            self.after.thread.join()
        started = time.monotonic()
        try:
            if self.cancelled:
                raise RuntimeError("cancelled before it started")
            self.value = self.make(self)
        except BaseException as exc:  # re-raised in the fixture that takes it
            self.error = exc
        self.seconds = time.monotonic() - started

    def result(self) -> t.Any:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value

    def cancel(self) -> None:
        self.cancelled = True
        if self.thread.is_alive() and self.abort is not None:
            try:
                self.abort()
            except Exception:
                pass
        self.thread.join(300)
        if self.error is None and self.value is not None and self.cleanup is not None:
            self.cleanup(self.value)
        elif self.abort is not None:
            try:
                self.abort()  # whatever a failed or late setup left
            except Exception:
                pass


_PENDING: list[tuple[int, "Job"]] = []


def register(name: str, make: t.Callable[[Job], t.Any], cleanup: t.Callable[[t.Any], None] | None = None,
             first_needed: int = 0) -> None:
    """A setup to start at launch(); first_needed: index of the first test that needs it."""
    with _LOCK:
        assert name not in _JOBS and name not in [j.name for j in _STARTED], "prewarm %s registered twice" % name
        job = Job(name, make, cleanup)
        _JOBS[name] = job
        _PENDING.append((first_needed, job))


def launch() -> None:
    """Start the registered setups, one after the other, the one needed first first
    (tests/conftest.py calls this after every conftest registered its setups)."""
    with _LOCK:
        pending = [job for _index, job in sorted(_PENDING, key=lambda pair: pair[0])]
        _PENDING.clear()
        for job in pending:
            job.after = _STARTED[-1] if _STARTED else None
            _STARTED.append(job)
    for job in pending:
        job.thread.start()


def take(name: str) -> Job | None:
    """The started job of that name (once: the taker owns the value and cleans it up), or None."""
    with _LOCK:
        return _JOBS.pop(name, None)


def stop_all() -> None:
    with _LOCK:
        jobs = list(_JOBS.values())
        _JOBS.clear()
    for job in jobs:
        job.cancelled = True  # a job still waiting for its turn does not start
    problems = []
    for job in jobs:
        try:
            job.cancel()
        except Exception as exc:  # one job's failed cleanup must not leak the others' servers
            problems.append("%s: %s" % (job.name, exc))
    if problems:
        raise RuntimeError("background setups not cleaned up: %s" % "; ".join(problems))
