"""Two checkouts on one machine share the test bed's registry without breaking each other.

testbed/registry.sh runs here with its own container name, network, host port, per-checkout
state dirs (GREENLIGHT_TESTBED_STATE) and machine-wide state dir (GREENLIGHT_TESTBED_SHARED), so
the test bed the rest of the suite uses is not touched. A server set up from the first checkout
trusts its CA and logs in with its password: both must keep working after the second checkout
runs the script (the x509 failure of the issue).
"""
from __future__ import annotations

import base64
import http.client
import os
import secrets
import ssl
import subprocess
import typing as t
from pathlib import Path

import pytest

from gltest import REPO, free_port

pytestmark = [pytest.mark.docker]



class Bed:
    def __init__(self, base: Path) -> None:
        suffix = secrets.token_hex(3)
        self.base = base
        self.name = "gltest-registry-" + suffix
        self.network = "gltest-net-" + suffix
        self.port = free_port()

    def registry_sh(self, state: Path, shared: Path) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, GREENLIGHT_TESTBED_STATE=str(state), GREENLIGHT_TESTBED_SHARED=str(shared),
                   GREENLIGHT_REGISTRY_NAME=self.name, GREENLIGHT_TESTBED_NETWORK=self.network,
                   GREENLIGHT_REGISTRY_PORT=str(self.port))
        proc = subprocess.run(["bash", str(REPO / "testbed" / "registry.sh")], env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def container_id(self) -> str:
        return subprocess.run(["docker", "inspect", "-f", "{{.Id}}", self.name], capture_output=True, text=True,
                              check=True).stdout.strip()

    def status(self, ca: bytes, password: str) -> int:
        """GET /v2/ over TLS, trusting only `ca`, logged in with `password` (200 = both good)."""
        context = ssl.create_default_context(cadata=ca.decode())
        # The registry's certificate names 127.0.0.1 besides registry.greenlight.test.
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=10)
        try:
            auth = base64.b64encode(("greenlight:%s" % password).encode()).decode()
            connection.request("GET", "/v2/", headers={"Authorization": "Basic " + auth})
            return connection.getresponse().status
        finally:
            connection.close()

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", "-v", self.name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", "-f", self.name + "-data"], capture_output=True, check=False)
        subprocess.run(["docker", "network", "rm", self.network], capture_output=True, check=False)


@pytest.fixture
def bed(tmp_path: Path, docker_available: None) -> t.Iterator[Bed]:
    if subprocess.run(["docker", "image", "inspect", "greenlight/registry:bookworm"], capture_output=True).returncode:
        pytest.fail("image greenlight/registry:bookworm missing: run `make testbed`")
    bed = Bed(tmp_path)
    try:
        yield bed
    finally:
        bed.remove()


def credentials(state: Path) -> tuple[bytes, str]:
    return (state / "ca" / "ca.crt").read_bytes(), (state / "registry-password").read_text().strip()


def test_a_second_checkout_keeps_the_first_checkouts_ca_and_password(bed: Bed, tmp_path: Path) -> None:
    shared = tmp_path / "machine"
    first, second = tmp_path / "checkout-1" / ".testbed", tmp_path / "checkout-2" / ".testbed"
    bed.registry_sh(first, shared)
    ca, password = credentials(first)
    assert bed.status(ca, password) == 200
    running = bed.container_id()

    bed.registry_sh(second, shared)
    # The registry the first checkout's servers use is the one that was there, unchanged.
    assert bed.container_id() == running
    assert credentials(second) == (ca, password)
    assert bed.status(ca, password) == 200
    # Running the first checkout again changes nothing either.
    bed.registry_sh(first, shared)
    assert bed.container_id() == running and credentials(first) == (ca, password)


def test_a_registry_started_with_other_state_is_adopted_with_its_ca_and_password(bed: Bed, tmp_path: Path) -> None:
    """The migration: a registry already runs from another checkout's own state (the layout before
    the machine-wide dir, or another GREENLIGHT_TESTBED_SHARED); a checkout whose machine-wide dir
    is still empty takes that registry's CA and password instead of making new ones."""
    earlier = tmp_path / "earlier-checkout" / ".testbed"
    bed.registry_sh(earlier, earlier)  # its state dir doubles as its machine-wide dir
    ca, password = credentials(earlier)
    assert bed.status(ca, password) == 200

    checkout = tmp_path / "checkout" / ".testbed"
    bed.registry_sh(checkout, tmp_path / "machine")
    assert credentials(checkout) == (ca, password)
    assert credentials(tmp_path / "machine") == (ca, password)
    assert bed.status(ca, password) == 200
