"""Nothing of the deploy user's environment chooses what root runs through deploy.sh: on a server
whose sudoers keeps the caller's PATH (no secure_path), a python3 and a docker planted first on the
deploy user's PATH never run as root. Runs after test_deploy_script.py (file order) and undoes its
sudoers drop-in and planted files."""
from __future__ import annotations

import shlex

DEPLOY_SH = "/opt/todo/deploy.sh"
PLANTED = ("python3", "docker", "nginx", "id", "sudo", "env")
DROP_IN = "/etc/sudoers.d/zz-greenlight-test-no-secure-path"


MARKERS = "/root/greenlight-test-path"  # 0700 root: only a planted command run by root can write here


def _marker(name: str) -> str:
    return f"{MARKERS}/{name}-ran"


def _as_deploy_with_planted_path(host, *args: str):
    return host.run("cd /home/deploy && sudo -u deploy env PATH=/home/deploy/bin:/usr/bin:/bin "
                    + shlex.join([DEPLOY_SH, *args]))


def test_a_planted_path_never_runs_as_root(host) -> None:
    host.run("sudo -u deploy mkdir -p /home/deploy/bin")
    for name in PLANTED:
        # Leaves a marker with the uid that ran it, then does what the real one does.
        script = (f"#!/bin/sh\n/usr/bin/id -u >> {_marker(name)} 2>/dev/null\n"
                  f"PATH=/usr/sbin:/usr/bin:/sbin:/bin exec {name} \"$@\"\n")
        written = host.run("printf %s " + shlex.quote(script)
                           + f" | sudo -u deploy sh -c 'cat > /home/deploy/bin/{name} && chmod 755 /home/deploy/bin/{name}'")
        assert written.rc == 0, written.stderr
    assert host.run(f"rm -rf {MARKERS} && mkdir -m 0700 {MARKERS}").rc == 0
    try:
        assert host.run(f"printf 'Defaults:deploy !secure_path\\n' > {DROP_IN} && chmod 0440 {DROP_IN}"
                        f" && visudo -cf {DROP_IN}").rc == 0
        listed = host.run("sudo -u deploy sudo -n -l")
        assert listed.rc == 0 and "!secure_path" in listed.stdout, listed.stdout  # the caller's PATH reaches root

        status = _as_deploy_with_planted_path(host, "status")
        assert status.rc == 0, status.stderr
        assert "live" in status.stdout
        pulled = _as_deploy_with_planted_path(host, "does-not-exist-path")  # docker pull runs, and fails
        assert pulled.rc == 1 and "docker pull" in pulled.stderr, pulled.stderr
        checked = _as_deploy_with_planted_path(host, "status", "--json")
        assert checked.rc == 0, checked.stderr
        for name in PLANTED:
            marker = host.file(_marker(name))
            assert not marker.exists, "root ran the deploy user's %s (uid %s)" % (name, marker.content_string.strip())
    finally:
        host.run(f"rm -rf {DROP_IN} {MARKERS} " + " ".join(f"/home/deploy/bin/{name}" for name in PLANTED))
