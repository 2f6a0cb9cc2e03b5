"""detach.py on its own: the background process holds no descriptor of the caller's pipes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.detach import spawn_detached

ROOT = Path(__file__).resolve().parents[4]


def _wait_for(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError("%s was not written within %ss" % (path, timeout))


def test_the_child_keeps_only_the_descriptors_it_is_given(tmp_path):
    kept = os.open(str(tmp_path / "kept"), os.O_RDWR | os.O_CREAT, 0o600)
    stray_read, stray_write = os.pipe()  # like the pipes Ansible or docker exec read the output from
    report = tmp_path / "fds"
    try:
        def work() -> int:
            listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
            open_fds = []
            for fd in sorted(listed):  # listdir's own descriptor is closed again by now
                try:
                    os.fstat(fd)
                except OSError:
                    continue
                open_fds.append(fd)
            targets = [os.readlink("/proc/self/fd/%d" % fd) for fd in (0, 1, 2)]
            report.write_text("%s|%s|%d\n" % (",".join(map(str, open_fds)), ",".join(targets), os.getsid(0)))
            return 0

        pid = spawn_detached(lambda: None, work, keep=[kept])
        assert pid != os.getpid()
        open_fds, targets, sid = _wait_for(report).strip().split("|")
        assert [int(fd) for fd in open_fds.split(",")] == sorted([0, 1, 2, kept])
        assert targets.split(",") == ["/dev/null"] * 3
        assert int(sid) != os.getsid(0)  # its own session: no terminal, no signal of the caller's group
    finally:
        os.close(kept)
        os.close(stray_read)
        os.close(stray_write)


def test_a_caller_whose_output_is_read_through_a_pipe_is_not_held_up(tmp_path):
    """What Ansible (the module's stdout) and docker exec do: read the caller's output until EOF.
    The caller returns at once; the background work (3 s) goes on and finishes."""
    done = tmp_path / "done"
    script = textwrap.dedent("""
        import sys, time
        sys.path.insert(0, %r)
        from ansible_collections.greenlight.deploy.plugins.module_utils._engine.detach import spawn_detached
        def work():
            time.sleep(3)
            open(%r, "w").write("done\\n")
            return 0
        print("pid", spawn_detached(lambda: None, work), flush=True)
        sys.stderr.write("returned\\n")
    """) % (os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(ROOT / ".collections")).split(":")[0], str(done))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=20)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pid ") and proc.stderr == "returned\n"
    assert took < 2.5, "the caller's pipes were held open by the background process (%.1fs)" % took
    assert not done.exists()
    assert _wait_for(done) == "done\n"


def test_a_child_that_fails_before_it_is_ready_hands_nothing_over(tmp_path):
    def ready() -> None:
        raise RuntimeError("cannot take over")

    try:
        spawn_detached(ready, lambda: 0)
    except OSError as exc:
        assert "died before it took over" in str(exc)
    else:
        raise AssertionError("spawn_detached returned although the child never took over")
