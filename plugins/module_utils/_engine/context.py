# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""One run of the engine on one server: what every phase reads and leaves behind for the next
(options, Docker, env, the lock, timings, the result, what was created so a failure can undo it).

Progress: every phase start and end, and the steps inside a long phase (which pre-switch command
runs, which health attempt), go to one hook, ``progress`` (deploy.sh prints them live,
cli_progress.py), and into the result: ``phase_log`` (each phase's start and seconds) and
``progress`` (the last phase entered and its last step, what a failure shows)."""

from __future__ import annotations

import contextlib
import datetime
import os
import time
import typing as t

from .audit import current_actor
from .docker_api import DockerClient
from .envfile import read_env_file
from .labels import LABEL_APP, SERVICE_WEB, config_hash
from .lock import DeployLock
from .options import SwapOptions
from .redact import redact
from .result import Result


def _utc_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Run:
    """The shared state of one run. Phases are functions of (run, plan)."""

    def __init__(self, opts: SwapOptions, docker: t.Optional[t.Any] = None,
                 log: t.Optional[t.Callable[[str], None]] = None,
                 progress: t.Optional[t.Callable[[dict[str, t.Any]], None]] = None) -> None:
        self.opts = opts
        self.docker = docker or DockerClient(opts.docker_socket)
        self.log = log or (lambda message: None)
        # Called with {"event": "start" | "step" | "end", "phase": ..., "step": ..., "seconds": ...}.
        self.progress = progress
        self.phase_started = time.monotonic()
        self.phase_started_utc = _utc_iso()
        self.actor = current_actor(opts.actor)
        self.phases: dict[str, float] = {}
        self.phase = "plan"
        self.lock: t.Optional[DeployLock] = None
        self.result = Result(self.actor)
        self.env: list[str] = []
        self.env_sha256: t.Optional[str] = None
        self.plan: t.Optional[t.Any] = None  # the latest Plan (plan.py)
        # What this run created or did, so a failure knows what to undo (failure.py).
        self.new_container: t.Optional[str] = None
        self.one_off: list[str] = []
        self.snapshot: t.Optional[str] = None
        self.pre_switch_started = False
        self.switched = False  # traffic is on the new container now
        self.ever_switched = False  # it was at some point (the new release may have written data)
        self.remove_after_stop = False  # prune: the old release goes once the background stop ends
        # Write end of the pipe the background stop waits on (phases_traffic.stop_old_in_background).
        self.recorded_fd: t.Optional[int] = None

    # -- bookkeeping ----------------------------------------------------------------------------
    def enter(self, phase: str) -> float:
        self.phase = phase
        self.log("phase %s" % phase)
        if self.lock:
            self.lock.update(phase=phase)
        self.phase_started = time.monotonic()
        self.phase_started_utc = _utc_iso()
        self.result.set(progress={"phase": phase, "step": None, "started": self.phase_started_utc})
        self._report({"event": "start", "phase": phase})
        return self.phase_started

    def leave(self, phase: str, started: float) -> None:
        seconds = time.monotonic() - started
        self.phases[phase] = round(self.phases.get(phase, 0.0) + seconds, 3)
        self.result.data.setdefault("phase_log", []).append(
            {"phase": phase, "started": self.phase_started_utc, "seconds": round(seconds, 3)})
        self._report({"event": "end", "phase": phase, "seconds": round(seconds, 3)})

    def step(self, text: str, repeat: bool = False) -> None:
        """Where the current phase is (e.g. "command 1 of 2: python manage.py migrate", "attempt 3"):
        the progress hook shows it, result progress keeps the last one for a failure. `repeat`: one
        of many alike (health attempts), which a log may thin out."""
        text = redact(text, self.env)  # a command line may hold an env value: shown and kept redacted
        progress = dict(self.result.get("progress") or {"phase": self.phase, "started": self.phase_started_utc})
        progress["step"] = text
        self.result.set(progress=progress)
        self._report({"event": "step", "phase": self.phase, "step": text, "repeat": repeat})

    def progress_seconds(self) -> float:
        """Seconds since the current phase started (a failure reports how long it ran)."""
        return round(time.monotonic() - self.phase_started, 3)

    def _report(self, event: dict[str, t.Any]) -> None:
        """Tell the progress hook; a hook that fails (a closed terminal) never fails the run."""
        if self.progress is not None:
            try:
                self.progress(event)
            except Exception:  # pylint: disable=broad-except
                self.progress = None

    @contextlib.contextmanager
    def timed(self, phase: str) -> t.Iterator[None]:
        """Enter `phase` (the lock says so) and add its time to phases when it ends without error."""
        started = self.enter(phase)
        yield
        self.leave(phase, started)

    def release_lock(self) -> None:
        if self.lock:
            self.lock.release()
            self.lock = None
        self.recorded(False)

    def recorded(self, ok: bool = True) -> None:
        """Tell the background stop (if any) that the audit record is written (ok) or never will
        be (not ok: it then leaves the lock file as an interrupted run's)."""
        if self.recorded_fd is not None:
            try:
                if ok:
                    os.write(self.recorded_fd, b"1")
            except OSError:
                pass
            finally:
                os.close(self.recorded_fd)
                self.recorded_fd = None

    # -- state ----------------------------------------------------------------------------------
    def read_env(self) -> None:
        self.env, self.env_sha256 = read_env_file(self.opts.env_file)

    def containers(self) -> list[dict[str, t.Any]]:
        return self.docker.list_containers(labels={LABEL_APP: self.opts.app_name})

    def hash(self, image_id: str, service: str, command: t.Any = None) -> str:
        port = self.opts.container_port if service == SERVICE_WEB else None
        return config_hash(image_id, service, command, port, self.opts.mounts, self.env_sha256,
                           self.opts.restart_policy, self.opts.labels)
