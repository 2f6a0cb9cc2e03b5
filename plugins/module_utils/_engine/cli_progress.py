# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""deploy.sh's view of a run while it runs: the engine's progress hook (context.Run.progress).

On a terminal, each phase is one line: while it runs, a spinner, its elapsed seconds and its
latest step (the pre-switch command running, the health attempt) are redrawn in place ten times
a second; when it ends the line shows its time. Without a terminal (CI logs), plain lines: one
when a phase starts, one per step (a repeated step such as a health attempt at most every
PLAIN_REPEAT_SECONDS), one with its time when it ends. Both go to stderr; the result on stdout
(and --json) is unchanged by them.
"""

from __future__ import annotations

import threading
import time
import typing as t

from .cli_config import PROG, _printable

SPINNER = "|/-\\"
TICK_SECONDS = 0.1
PLAIN_REPEAT_SECONDS = 5.0
PHASE_WIDTH = 10


class Progress:
    """Call it with the engine's progress events; close() (or failed()) when the run ends."""

    def __init__(self, stream: t.TextIO, live: t.Optional[bool] = None) -> None:
        self.stream = stream
        if live is None:
            try:
                live = stream.isatty()
            except (AttributeError, ValueError):
                live = False
        self.live = bool(live)
        self.phase: t.Optional[str] = None
        self.step: t.Optional[str] = None
        self.started = 0.0
        self.printed_step_at = 0.0
        self.width = 0  # of the line drawn in place, to blank it out
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: t.Optional[threading.Thread] = None

    # -- the engine's hook ------------------------------------------------------------------------
    def __call__(self, event: dict[str, t.Any]) -> None:
        kind, phase = event.get("event"), str(event.get("phase"))
        with self._lock:
            if kind == "start":
                self.phase, self.step, self.started = phase, None, time.monotonic()
                if self.live:
                    self._draw()
                    self._start_ticker()
                else:
                    self._line("%s: phase %s" % (PROG, phase))
            elif kind == "step":
                self.step = str(event.get("step"))
                if self.live:
                    self._draw()
                elif not event.get("repeat") or time.monotonic() - self.printed_step_at >= PLAIN_REPEAT_SECONDS:
                    self.printed_step_at = time.monotonic()
                    self._line("%s: phase %s: %s" % (PROG, phase, self.step))
            elif kind == "end":
                seconds = float(event.get("seconds") or 0.0)
                if self.live:
                    self._finish("%s: %s done in %.2fs" % (PROG, phase.ljust(PHASE_WIDTH), seconds))
                else:
                    self._line("%s: phase %s done in %.2fs" % (PROG, phase, seconds))
                self.phase, self.step = None, None

    def failed(self) -> None:
        """The run failed: say in which phase, after how long, at which step; stop the ticker."""
        with self._lock:
            if self.phase is not None:
                text = "%s: %s FAILED after %.1fs%s" % (
                    PROG, self.phase.ljust(PHASE_WIDTH) if self.live else self.phase,
                    time.monotonic() - self.started, (" (%s)" % self.step) if self.step else "")
                if self.live:
                    self._finish(text)
                else:
                    self._line(text)
                self.phase = None
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1)
            self._ticker = None
        with self._lock:
            if self.live and self.phase is not None:  # a phase the engine never ended (interrupted)
                self._finish("%s: %s stopped after %.1fs" % (PROG, self.phase.ljust(PHASE_WIDTH),
                                                             time.monotonic() - self.started))
                self.phase = None

    # -- drawing (under self._lock) ---------------------------------------------------------------
    def _line(self, text: str) -> None:
        self.stream.write(_printable(text) + "\n")
        self.stream.flush()

    def _draw(self) -> None:
        if self.phase is None:
            return
        elapsed = time.monotonic() - self.started
        spin = SPINNER[int(elapsed / TICK_SECONDS) % len(SPINNER)]
        text = _printable("%s: %s %s %5.1fs%s" % (PROG, self.phase.ljust(PHASE_WIDTH), spin, elapsed,
                                                  ("  " + self.step) if self.step else ""))[:200]
        self.stream.write("\r" + text + " " * max(0, self.width - len(text)))
        self.stream.flush()
        self.width = len(text)

    def _finish(self, text: str) -> None:
        text = _printable(text)
        self.stream.write("\r" + text + " " * max(0, self.width - len(text)) + "\n")
        self.stream.flush()
        self.width = 0

    def _start_ticker(self) -> None:
        if self._ticker is not None:
            return

        def tick() -> None:
            while not self._stop.wait(TICK_SECONDS):
                with self._lock:
                    try:
                        self._draw()
                    except (OSError, ValueError):  # the terminal went away: the run goes on
                        return

        self._ticker = threading.Thread(target=tick, name="deploy.sh progress", daemon=True)
        self._ticker.start()
