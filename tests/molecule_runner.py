"""Molecule scenarios in the background of the pytest session.

A scenario spends most of its minutes waiting: for systemd and a Docker engine to start in its
server container, for apt, for Ansible's round trips. So `make test` starts the selected
scenarios as soon as collection is done, while the other tests run; each
`test_molecule_scenario[<name>]` then waits for its scenario's result.

They run two at a time by default (GREENLIGHT_MOLECULE_WORKERS=1 runs them one after the other,
more runs that many): each scenario has its own containers (gl-<scenario>...), its own ephemeral
directory, and none writes to a shared place (the molecule prerun, which would install a copy of
the collection into ~/.ansible, is off in .config/molecule/config.yml). One after the other they
took longer than the rest of the suite (about 34 of its 36 minutes with ten scenarios).
The longest scenarios start first, by the durations of the last runs
(.testbed/molecule-seconds.json), so the last one to finish is a short one.
GREENLIGHT_TEST_SERIAL=1 runs each scenario inside its own test instead.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import typing as t

from gltest import REPO, TESTBED_STATE, ansible_env

DURATIONS = TESTBED_STATE / "molecule-seconds.json"
_durations_lock = threading.Lock()


def remove_anonymous_volumes() -> None:
    """Molecule's destroy keeps the anonymous /var/lib/docker volumes of server containers.
    (Only dangling ones go: the volume of a running scenario's container is in use.)"""
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


def last_durations() -> dict[str, float]:
    try:
        data = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def record_duration(scenario: str, seconds: float) -> None:
    with _durations_lock:
        data = last_durations()
        data[scenario] = round(seconds, 1)
        try:
            DURATIONS.parent.mkdir(parents=True, exist_ok=True)
            tmp = DURATIONS.with_name(DURATIONS.name + ".%d.tmp" % os.getpid())
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            tmp.replace(DURATIONS)
        except OSError:
            pass  # only an ordering hint


def longest_first(scenarios: list[str]) -> list[str]:
    """Scenarios by their last recorded duration, longest first; unknown ones first of all
    (they may be long), in the given order."""
    known = last_durations()
    return sorted(scenarios, key=lambda name: -known.get(name, float("inf")))


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
    seconds = time.monotonic() - begin
    if proc.returncode == 0:
        record_duration(scenario, seconds)
    return Outcome(proc.returncode, output, seconds)


def workers_from_env() -> int:
    try:
        return max(1, int(os.environ.get("GREENLIGHT_MOLECULE_WORKERS", "2")))
    except ValueError:
        return 1


class BackgroundScenarios:
    """Runs scenarios in `workers` threads (longest first); wait(name) returns a scenario's outcome."""

    def __init__(self, scenarios: list[str], workers: int | None = None) -> None:
        self.scenarios = scenarios
        self.queue = longest_first(scenarios)
        self.outcomes: dict[str, Outcome] = {}
        self.done = {name: threading.Event() for name in scenarios}
        self.running: dict[str, subprocess.Popen] = {}
        self.stopping = False
        self.lock = threading.Lock()
        count = min(workers or workers_from_env(), max(1, len(scenarios)))
        self.threads = [threading.Thread(target=self._run, name="molecule-scenarios-%d" % n, daemon=True)
                        for n in range(count)]

    def start(self) -> "BackgroundScenarios":
        for thread in self.threads:
            thread.start()
        return self

    def _next(self) -> str | None:
        with self.lock:
            return self.queue.pop(0) if self.queue else None

    def _run(self) -> None:
        while True:
            name = self._next()
            if name is None:
                return
            if self.stopping:
                self.outcomes[name] = Outcome(-1, "the test session ended before this scenario ran", 0.0)
            else:
                try:
                    self.outcomes[name] = run_scenario(name, started=lambda proc, name=name: self._started(name, proc))
                except Exception as exc:  # reported by the scenario's test
                    self.outcomes[name] = Outcome(-1, "could not run molecule: %r" % exc, 0.0)
            with self.lock:
                self.running.pop(name, None)
            self.done[name].set()

    def _started(self, name: str, proc: subprocess.Popen) -> None:
        with self.lock:
            self.running[name] = proc
        if self.stopping and proc.poll() is None:
            proc.terminate()

    def wait(self, name: str, timeout: float = 3600) -> Outcome:
        if not self.done[name].wait(timeout):
            return Outcome(-1, "scenario %s did not finish within %ss" % (name, timeout), timeout)
        return self.outcomes[name]

    def stop(self) -> None:
        """End of the session (also Ctrl-C): stop the scenarios that run, start no other."""
        self.stopping = True
        with self.lock:
            procs = list(self.running.values())
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for thread in self.threads:
            thread.join(120)


def background_enabled() -> bool:
    return os.environ.get("GREENLIGHT_TEST_SERIAL", "") in ("", "0")
