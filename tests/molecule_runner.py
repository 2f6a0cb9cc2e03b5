"""Molecule scenarios in the background of the pytest session.

A scenario spends most of its minutes waiting: for systemd and a Docker engine to start in its
server container, for apt, for Ansible's round trips. So `make test` starts the selected
scenarios one after the other in a background thread as soon as collection is done, while the
other tests run; each `test_molecule_scenario[<name>]` then waits for its scenario's result.
Scenarios never run two at a time (they share the project's .ansible directory).
GREENLIGHT_TEST_SERIAL=1 runs each scenario inside its own test instead.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
import typing as t

from gltest import REPO, ansible_env


def remove_anonymous_volumes() -> None:
    """Molecule's destroy keeps the anonymous /var/lib/docker volumes of server containers."""
    out = subprocess.run(
        ["docker", "volume", "ls", "-qf", "dangling=true"], capture_output=True, text=True, check=False
    ).stdout.split()
    anonymous = [v for v in out if len(v) == 64 and all(c in "0123456789abcdef" for c in v)]
    if anonymous:
        subprocess.run(["docker", "volume", "rm", *anonymous], capture_output=True, check=False)


class Outcome(t.NamedTuple):
    returncode: int
    output: str
    seconds: float


def run_scenario(scenario: str, started: t.Callable[[subprocess.Popen], None] | None = None) -> Outcome:
    begin = time.monotonic()
    proc = subprocess.Popen(
        ["molecule", "test", "-s", scenario],
        cwd=REPO,
        env=ansible_env(PY_COLORS="0", ANSIBLE_NOCOLOR="1", NO_COLOR="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if started:
        started(proc)
    output, _ = proc.communicate()
    remove_anonymous_volumes()
    return Outcome(proc.returncode, output, time.monotonic() - begin)


class BackgroundScenarios:
    """Runs scenarios in order in one thread; wait(name) returns a scenario's outcome."""

    def __init__(self, scenarios: list[str]) -> None:
        self.scenarios = scenarios
        self.outcomes: dict[str, Outcome] = {}
        self.done = {name: threading.Event() for name in scenarios}
        self.current: subprocess.Popen | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="molecule-scenarios", daemon=True)

    def start(self) -> "BackgroundScenarios":
        self.thread.start()
        return self

    def _run(self) -> None:
        for name in self.scenarios:
            if self.stopping:
                self.outcomes[name] = Outcome(-1, "the test session ended before this scenario ran", 0.0)
            else:
                try:
                    self.outcomes[name] = run_scenario(name, started=self._started)
                except Exception as exc:  # reported by the scenario's test
                    self.outcomes[name] = Outcome(-1, "could not run molecule: %r" % exc, 0.0)
            self.current = None
            self.done[name].set()

    def _started(self, proc: subprocess.Popen) -> None:
        self.current = proc

    def wait(self, name: str, timeout: float = 3600) -> Outcome:
        if not self.done[name].wait(timeout):
            return Outcome(-1, "scenario %s did not finish within %ss" % (name, timeout), timeout)
        return self.outcomes[name]

    def stop(self) -> None:
        """End of the session (also Ctrl-C): stop the scenario that runs, start no other."""
        self.stopping = True
        proc = self.current
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.thread.join(120)


def background_enabled() -> bool:
    return os.environ.get("GREENLIGHT_TEST_SERIAL", "") in ("", "0")
