"""Every process command line, sampled while something runs: inside a server container (one
long-lived `docker exec` loop, ~every 20 ms) and on this machine (reading /proc, ~every 10 ms).
Used to prove that a secret never appears in a process list (tests/reliability and
molecule/registry_login import it; standard library only)."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path


class CmdlineSampler:
    def __init__(self, container: str) -> None:
        self.container: list[str] = []
        self.controller: list[str] = []
        self._stop = threading.Event()
        self._exec = subprocess.Popen(
            ["docker", "exec", container, "sh", "-c",
             'while :; do cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " "; echo; sleep 0.02; done'],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, errors="replace")
        self._threads = [threading.Thread(target=self._read_container, daemon=True),
                         threading.Thread(target=self._read_controller, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_container(self) -> None:
        assert self._exec.stdout is not None
        for line in self._exec.stdout:
            self.container.append(line)

    def _read_controller(self) -> None:
        while not self._stop.is_set():
            sample = []
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        sample.append(Path("/proc/%s/cmdline" % pid).read_bytes().replace(b"\0", b" "))
                    except OSError:
                        pass
            self.controller.append(b"\n".join(sample).decode(errors="replace"))
            time.sleep(0.01)

    def stop(self) -> "CmdlineSampler":
        self._stop.set()
        self._exec.terminate()
        self._exec.wait(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)
        return self

    def saw(self, needle: str) -> bool:
        return any(needle in s for s in self.container) or any(needle in s for s in self.controller)
