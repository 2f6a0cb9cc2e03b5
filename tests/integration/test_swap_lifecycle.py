"""Rollback under load, data survives many deploys with pruning, services from the same image."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import time

import pytest

from conftest import LoadGenerator, image, require_images

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

from test_swap_basic import add_row, list_names

pytestmark = pytest.mark.docker


def test_rollback_to_previous_release_under_load(app_host, nginx):
    """Test 5: v1, v2, then rollback (to the kept v1 container's image) under load."""
    require_images("v1", "v2")
    first = run_swap(app_host.options(image=image("v1")))
    run_swap(app_host.options(image=image("v2")))
    assert nginx.get("/health") == (200, "v2")

    options = app_host.options(mode="rollback")
    options.pop("pre_switch_commands")  # no migrations backwards; v1 runs on the v2 schema
    load = LoadGenerator(nginx.port).start()
    time.sleep(1.0)
    result = run_swap(options)
    switched_at = time.monotonic()
    time.sleep(1.0)
    load.stop()
    summary = load.summary()
    print("load during rollback v2->v1:", summary, "phases:", result["phases"])
    assert result["action"] == "rollback" and result["release"] == "v1" and result["previous_release"] == "v2"
    assert result["image_id"] == docker_image_id(image("v1"))
    assert load.failures == [], summary
    after = [r for r in load.results if r[0] > switched_at]
    assert after and all(r[2] == "v1" for r in after)
    assert nginx.get("/health") == (200, "v1")
    # The rollback ran a new container from the kept image; the superseded v1 container is pruned.
    assert result["container_id"] != first["container_id"]
    names = {c["Labels"]["greenlight.release"]: c["State"] for c in app_host.containers()
             if c["Labels"]["greenlight.service"] == "web"}
    assert names == {"v1": "running", "v2": "exited"}
    line = app_host.audit_lines()[-1]
    assert line["action"] == "rollback" and line["result"] == "ok"

    # Rolling back again goes to v2 (the newest kept release other than the live one).
    again = run_swap(options)
    assert again["release"] == "v2" and nginx.get("/health") == (200, "v2")


def docker_image_id(reference: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", reference], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_data_survives_many_deploys_and_old_releases_are_pruned(app_host, nginx):
    """Test 8: a row written under v1 survives v2, a rollback and 10 more deploys."""
    require_images("v1", "v2")
    keep = {"releases_to_keep": 2, "backups_to_keep": 3}
    run_swap(app_host.options(image=image("v1"), **keep))
    add_row(app_host.db_path, "written under v1")
    run_swap(app_host.options(image=image("v2"), **keep))
    rollback = app_host.options(mode="rollback", **keep)
    rollback.pop("pre_switch_commands")
    run_swap(rollback)
    assert nginx.get("/health") == (200, "v1")
    # Ten more deploys, alternating images with new release ids. The schema is already at v2, so
    # these skip the migrate command and the static copy to keep the suite fast.
    fast = dict(keep, pre_switch_commands=[], static_source=None, drain_seconds=0.3, stop_grace_seconds=2)
    for number in range(10):
        variant = "v2" if number % 2 == 0 else "v1"
        result = run_swap(app_host.options(image=image(variant), release="%s-r%d" % (variant, number), **fast))
        assert result["release"] == "%s-r%d" % (variant, number)
        assert nginx.get("/health") == (200, variant)
    assert "written under v1" in list_names(app_host.db_path)
    assert nginx.get("/")[0] == 200
    webs = [c for c in app_host.containers() if c["Labels"]["greenlight.service"] == "web"]
    running = [c for c in webs if c["State"] == "running"]
    kept = sorted(c["Labels"]["greenlight.release"] for c in webs if c["State"] != "running")
    assert [c["Labels"]["greenlight.release"] for c in running] == ["v1-r9"]
    assert kept == ["v1-r7", "v2-r8"]  # releases_to_keep=2, newest first
    backups = sorted(p.name for p in app_host.backups_dir.iterdir())
    assert len(backups) == 3
    assert len(app_host.audit_lines()) == 13


def docker_events(app: str, since: float, until: float) -> list[dict]:
    output = subprocess.run(["docker", "events", "--since", "%.3f" % since, "--until", "%.3f" % until,
                             "--filter", "label=greenlight.app=%s" % app, "--filter", "type=container",
                             "--format", "{{json .}}"], capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_services_replaced_after_web_is_live(app_host, nginx):
    """Test 9: a worker is replaced new-then-old after web is live; a singleton old-then-new."""
    require_images("v1", "v2")
    services = [{"name": "worker", "command": "python -c 'import time; time.sleep(10**6)'"},
                {"name": "beat", "command": ["python", "-c", "import time; time.sleep(10**6)"], "singleton": True}]
    first = run_swap(app_host.options(image=image("v1"), services=services, stop_grace_seconds=1))
    assert sorted(n.split("-")[2] for n in first["services"]) == ["beat", "worker"]
    again = run_swap(app_host.options(image=image("v1"), services=services, stop_grace_seconds=1))
    assert again["changed"] is False

    since = time.time()
    second = run_swap(app_host.options(image=image("v2"), services=services, stop_grace_seconds=1))
    until = time.time() + 1
    events = docker_events(app_host.app, since, until)

    def when(action: str, service: str, release: str) -> float:
        times = [e["timeNano"] / 1e9 for e in events if e["Action"] == action
                 and e["Actor"]["Attributes"].get("greenlight.service") == service
                 and e["Actor"]["Attributes"].get("greenlight.release") == release]
        assert times, (action, service, release)
        return min(times)

    web_live = when("die", "web", "v1")  # the old web stops only after the switch and the drain
    assert when("start", "worker", "v2") > web_live
    assert when("start", "beat", "v2") > web_live
    # worker: the new one starts before the old one stops; beat: the old one stops first.
    assert when("start", "worker", "v2") < when("die", "worker", "v1")
    assert when("die", "beat", "v1") < when("start", "beat", "v2")

    running = {(c["Labels"]["greenlight.service"], c["Labels"]["greenlight.release"])
               for c in app_host.containers(all=False)}
    assert running == {("web", "v2"), ("worker", "v2"), ("beat", "v2")}
    service_names = [c["Names"][0].lstrip("/") for c in app_host.containers(all=False)
                     if c["Labels"]["greenlight.service"] != "web"]
    assert sorted(second["services"]) == sorted(service_names)

    # Removing a service from the options stops and removes its container (a config change).
    third = run_swap(app_host.options(image=image("v2"), services=services[:1], stop_grace_seconds=1))
    assert third["changed"] is True and third["action"] == "config-change"
    assert third["container_id"] == second["container_id"]  # web untouched
    assert {c["Labels"]["greenlight.service"] for c in app_host.containers()} >= {"web", "worker"}
    assert "beat" not in {c["Labels"]["greenlight.service"] for c in app_host.containers()}


def test_drain_lasts_while_a_request_is_in_flight_and_no_longer(app_host, nginx):
    """The old release gets SIGTERM once nginx holds no connection to it: at once (0.5 s floor)
    when it is idle, after the answer when a request is in flight; never the full drain_seconds."""
    require_images("v1", "v2")
    fast = dict(static_source=None, drain_seconds=30, stop_grace_seconds=2)
    run_swap(app_host.options(image=image("v1"), **fast))
    nginx.wait_release("v1")
    idle = run_swap(app_host.options(image=image("v2"), **fast))
    fast["pre_switch_commands"] = []  # the schema is at v2 now
    print("idle drain:", idle["drain"], "phases:", idle["phases"])
    assert idle["drain"]["idle"] is True and 0.5 <= idle["phases"]["drain"] < 5
    nginx.wait_release("v2")
    [old_web] = app_host.running_web()

    since = time.time()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(lambda: (nginx.get("/slow/?seconds=4", 30), time.time()))
        time.sleep(0.5)  # the request is on v2 before the swap starts
        rollback = app_host.options(mode="rollback", **fast)
        result = run_swap(rollback)
        (status, release), answered_at = answer.result()
    print("busy drain:", result["drain"], "phases:", result["phases"])
    assert (status, release) == (200, "v2")
    assert result["release"] == "v1" and result["drain"]["idle"] is True
    assert result["phases"]["drain"] < 15
    sigterms = [e["timeNano"] / 1e9 for e in docker_events(app_host.app, since, time.time() + 1)
                if e.get("id") == old_web["Id"] and e.get("Action") == "kill"
                and e["Actor"]["Attributes"].get("signal") == "15"]
    assert len(sigterms) == 1, sigterms
    # 0.2 s: the client reads the answer a moment after nginx closed its upstream connection.
    assert sigterms[0] > answered_at - 0.2, (sigterms[0], answered_at)
    assert sigterms[0] < answered_at + 5, (sigterms[0], answered_at)
