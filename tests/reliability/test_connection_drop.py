"""Promise: when the SSH connection of a deploy drops mid-swap, a release keeps serving (the old
or the new one, never nothing), the deploy lock frees itself, and re-running converges."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from server_under_test import LoadGenerator, Server

pytestmark = pytest.mark.docker

SLOW_PRE_SWITCH = ["python manage.py migrate --noinput", ["python", "-c", "import time; time.sleep(5)"]]


def ssh_inventory(server: Server, workdir: Path) -> Path:
    """An inventory reaching the server over real SSH (host key checked), root with a fresh key,
    on the test bed network; the group_vars (and vault) are the suite's."""
    key = workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = key.with_suffix(".pub").read_text()
    server.sh("install -d -m 0700 /root/.ssh && printf '%%s' '%s' >> /root/.ssh/authorized_keys "
              "&& chmod 0600 /root/.ssh/authorized_keys" % public.strip())
    address = subprocess.run(["docker", "inspect", "-f", '{{(index .NetworkSettings.Networks "greenlight-test").IPAddress}}',
                              server.name], capture_output=True, text=True, check=True).stdout.strip()
    known_hosts = workdir / "known_hosts"
    deadline = time.monotonic() + 30
    while True:
        host_key = server.sh("cat /etc/ssh/ssh_host_ed25519_key.pub", check=False).stdout.split()
        if len(host_key) >= 2 and server.sh("systemctl is-active ssh", check=False).stdout.strip() == "active":
            break
        assert time.monotonic() < deadline, "sshd did not start on %s" % server.name
        time.sleep(0.5)
    known_hosts.write_text("%s %s %s\n" % (address, host_key[0], host_key[1]))
    inventory = workdir / "ssh-inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(server.inventory / "group_vars")
    (inventory / "hosts.yml").write_text(
        "staging:\n  hosts:\n    %s:\n      ansible_host: %s\n      ansible_user: root\n"
        "      ansible_ssh_private_key_file: %s\n      ansible_python_interpreter: /usr/bin/python3\n"
        "      ansible_ssh_args: -o ControlMaster=auto -o ControlPersist=10s -o StrictHostKeyChecking=yes"
        " -o UserKnownHostsFile=%s -o ServerAliveInterval=2 -o ServerAliveCountMax=2\n"
        % (server.name, address, key, known_hosts))
    return inventory


def sshd_sessions(server: Server) -> list[int]:
    """Pids of sshd processes serving a connection (not the listener)."""
    out = server.sh("ps -eo pid=,args=").stdout
    return [int(line.split()[0]) for line in out.splitlines()
            if " sshd: " in " " + line.split(None, 1)[1] and "listener" not in line and "/usr/sbin/sshd" not in line]


def test_ssh_connection_dropped_mid_deploy_leaves_a_release_serving_and_rerun_converges(settled: Server,
                                                                                          tmp_path: Path) -> None:
    server = settled
    old, new = server.live_release(), server.other_release()
    inventory = ssh_inventory(server, tmp_path)
    load = LoadGenerator(server.port, threads=4, max_seconds=300).start()
    try:
        deploy = server.start_playbook("deploy.yml", inventory=inventory, extra_vars={
            "app_image_tag": new, "deploy_script_pre_switch_commands": SLOW_PRE_SWITCH})
        try:
            holder = server.wait_for_phase(["pre_switch"])
            sessions = sshd_sessions(server)
            assert sessions, "no sshd session on the server while the deploy runs over SSH"
            server.sh("kill -9 %s" % " ".join(str(pid) for pid in sessions))
            dropped = deploy.finish(timeout=120)
        finally:
            if deploy.proc.poll() is None:
                deploy.proc.kill()
        assert dropped.rc != 0, "the playbook did not notice the dropped connection:\n" + dropped.output[-3000:]
        assert "UNREACHABLE" in dropped.output or "unreachable=1" in dropped.output, dropped.output[-3000:]
        # The swap process on the server may finish or die; either way the kernel frees the lock.
        deadline = time.monotonic() + 120
        while not server.lock_is_free():
            assert time.monotonic() < deadline, "the deploy lock is still held: %s" % server.lock_holder()
            time.sleep(0.5)
        assert server.live_release() in (old, new)
        rerun = server.deploy(new, inventory=inventory)
        time.sleep(0.5)
    finally:
        load.stop()
    assert rerun.rc == 0, rerun.output[-3000:]
    summary = load.summary()
    assert summary["requests"] > 50 and load.failures == [], summary
    assert set(summary["by_release"]) <= {old, new}, summary
    server.wait_release(new)
    assert [c["release"] for c in server.running_web()] == [new]
    assert server.lock_is_free()
    assert holder["pid"], holder
