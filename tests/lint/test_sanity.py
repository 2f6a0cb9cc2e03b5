"""`ansible-test sanity` on what the collection ships, with no ignore file.

ansible-test wants the collection at .../ansible_collections/<namespace>/<name>, so the test builds
the collection tarball (exactly what users install; tests, test bed and benchmarks are not in it),
unpacks it under that layout in a temp directory and runs every sanity test there on the Python of
.venv (3.11). No Docker image: each sanity test gets the virtualenv ansible-test makes for it under
~/.ansible/test/venv, which stays for the next run (the first run installs their packages from
PyPI, about 3 minutes; later runs take about 40 seconds).

ansible-test puts pip into those virtualenvs with a get-pip.py script it downloads from
ci-files.testing.ansible.com, which this machine cannot reach. When that script is not cached yet,
the test writes a stand-in at the same cache path: it installs the pip bundled with Python
(ensurepip), then what ansible-test asked for, from the package index pip is configured with.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import ansible_test

import prewarm  # tests/prewarm.py
from gltest import REPO, VENV_BIN, ansible_env

PYTHON = "3.11"
PREWARM = "ansible-test-sanity"
# Not run here: shellcheck is not installed on the test machine (ansible-test only warns).
GET_PIP_STAND_IN = '''\
"""Stand-in for get-pip.py written by greenlight.deploy's tests/lint/test_sanity.py: ansible-test's
pip bootstrap without ci-files.testing.ansible.com. The pip bundled with Python (ensurepip, run in a
child so that its PIP_CONFIG_FILE=/dev/null does not stick), then pip install of the arguments."""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], stdout=subprocess.DEVNULL)
arguments = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", *arguments]))
'''


def ensure_pip_bootstrap() -> None:
    """The cached get-pip script ansible-test looks for (its pip version), or our stand-in."""
    requirements = Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
    version = re.search(r"pip='([0-9.]+)'", requirements.read_text()).group(1)
    cache = Path.home() / ".ansible" / "test" / "cache" / ("get_pip_%s.py" % version.replace(".", "_"))
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(GET_PIP_STAND_IN)


def test_no_sanity_ignore_file() -> None:
    assert not list(REPO.glob("tests/sanity/ignore-*.txt")), "fix the code, do not ignore it"


def shipped_tree(directory: Path) -> Path:
    """The built collection unpacked under directory/ansible_collections/greenlight/deploy."""
    build = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(directory)],
                           cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    root = directory / "ansible_collections" / "greenlight" / "deploy"
    root.mkdir(parents=True)
    with tarfile.open(next(directory.glob("greenlight-deploy-*.tar.gz"))) as tar:
        tar.extractall(root, filter="data")
    ensure_pip_bootstrap()
    return root


def sanity(root: Path, *extra: str, job: prewarm.Job | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([str(VENV_BIN / "ansible-test"), "sanity", "--python", PYTHON, "--color", "no", *extra],
                            cwd=root, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    if job is not None:  # the session ends before the test took the result: ansible-test and its children
        job.abort = lambda: os.killpg(proc.pid, signal.SIGKILL)
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def timed_sanity(directory: Path, job: prewarm.Job | None = None) -> tuple[subprocess.CompletedProcess, float]:
    root = shipped_tree(directory)
    started = time.monotonic()
    proc = sanity(root, job=job)
    return proc, time.monotonic() - started


def start_in_background(config, first_needed: int) -> None:
    """The sanity run (build, unpack, ansible-test) starts once collection is done
    (tests/lint/conftest.py); the test below takes its result."""
    directory = config._tmp_path_factory.mktemp("sanity")
    prewarm.register(PREWARM, lambda job: timed_sanity(directory, job), first_needed=first_needed)


def test_ansible_test_sanity_passes_on_the_shipped_collection(tmp_path: Path) -> None:
    started = prewarm.take(PREWARM)
    proc, seconds = started.result() if started else timed_sanity(tmp_path)
    output = proc.stdout + proc.stderr
    findings = [line for line in output.splitlines() if line.startswith(("ERROR:", "FATAL:"))]
    assert proc.returncode == 0 and not findings, "\n".join(findings) or output[-4000:]
    ran = set(re.findall(r'Running sanity test "([a-z0-9-]+)"', output))
    # The tests that matter for our code ran (not skipped for a missing requirement).
    assert {"validate-modules", "pylint", "pep8", "compile", "import", "ansible-doc", "yamllint",
            "runtime-metadata", "action-plugin-docs", "no-assert"} <= ran, sorted(ran)
    assert seconds < 600, "ansible-test sanity took %.0f s" % seconds


if __name__ == "__main__":
    # `make test` runs this in the background while it sets up the test bed: ansible-test makes
    # the virtualenvs of its sanity tests (pip installs from PyPI, minutes on a fresh machine), so
    # the test above only runs them. Nothing is checked here; a failure only costs that time later.
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="greenlight-sanity-") as temp:
        primed = sanity(shipped_tree(Path(temp)), "--prime-venvs")
    print(primed.stdout[-2000:], primed.stderr[-2000:])
    sys.exit(primed.returncode)
