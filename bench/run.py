#!/usr/bin/env python3
"""`make bench`: greenlight.deploy against the naive deploy script, on local server containers.

What it does (details and the latest figures: docs/benchmarks.md, which it rewrites):

1. starts glbench-1 .. glbench-6 (greenlight/server-docker: systemd, own Docker engine) on the
   test bed network; glbench-1's nginx is published on 127.0.0.1 for the load generator;
2. setup.yml on all six (bench/inventory, connection community.docker.docker), then deploy.yml
   puts v1 live everywhere and v2 is pulled in advance (every timed deploy finds its image present);
3. greenlight under load: 200 req/s through glbench-1's nginx (half keep-alive, half new
   connections) from before `deploy.yml` (v1 -> v2) starts until after it ends; then a no-op
   re-deploy and a rollback (also under load);
4. fleet: deploy.yml v1 -> v2 on 1, 3 and 6 servers in one run each (rolled back in between);
5. baseline: bench/naive-deploy.sh (docker pull; stop; rm; run --env-file; exec migrate; cp
   static) on glbench-1 behind the same nginx (its upstream pointed at the naive container's fixed
   port), v1 -> v2 under the same load;
6. prints the table, writes docs/benchmarks.md, removes the containers (--keep keeps them).

Traffic goes only to 127.0.0.1 and to the bench containers. Every load run is bounded in
requests and seconds. Logs of every command: bench/results/<UTC stamp>/ (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
import typing as t
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from loadgen import LoadGenerator  # noqa: E402
from charts import engine_spans, render_bench, save_timeline  # noqa: E402
sys.path.insert(0, str(REPO / "tests"))
from gltest import free_port  # noqa: E402  (shared with the test suites)

IMAGE_REPOSITORY = "registry.greenlight.test:5000/greenlight/todo"
SERVER_IMAGE = "greenlight/server-docker:bookworm"
SERVERS = ["glbench-%d" % n for n in range(1, 7)]
FLEETS = (1, 3, 6)
NAIVE_PORT = 8888
UPSTREAM_FILE = "/etc/nginx/greenlight/todo-upstream.conf"
RELEASES_LOG = "/opt/todo/releases.jsonl"

# Targets from issues 7 and 11 (docs/benchmarks.md).
TARGET_RATE = 200
TARGET_P99_FACTOR = 2.0
TARGET_WALL_RATIO = 1.5        # issue 7, informative since issue 11 measures the overhead directly
TARGET_NOOP_SECONDS = 1.5      # issue 11 (was 3 s in issue 7)
TARGET_OVERHEAD_SECONDS = 1.5  # issue 11: deploy wall - the engine's real work
TARGET_FLEET_FACTOR = 2.0      # issue 7, wall time of a real 6-server deploy
TARGET_CONTROLLER_FACTOR = 1.3  # issue 11: controller CPU of a 6-server no-op against one server
# The engine's real work in a deploy (issue 11): what a deploy cannot skip. Everything else the
# wall time holds - ansible-playbook, its tasks, the engine's bookkeeping (plan, lock, cleanup,
# stop_old, services, prune, record) - is overhead.
REAL_WORK_PHASES = ("pull", "snapshot", "pre_switch", "static", "start", "health", "switch", "drain")

STEADY_SECONDS = 6.0   # load before a deploy starts (the first second is warm-up, not counted)
AFTER_SECONDS = 4.0    # load after it ended


def log(message: str) -> None:
    print("bench: %s" % message, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.results_dir = REPO / "bench" / "results" / stamp
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.port: t.Optional[int] = None
        self.figures: dict[str, t.Any] = {
            "started_utc": stamp, "threads": args.threads, "rate": args.rate,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")}
        self.env = dict(os.environ)
        self.env.update({
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".collections"),
            "PATH": "%s%s%s" % (REPO / ".venv" / "bin", os.pathsep, os.environ.get("PATH", "")),
            # What docs/benchmarks.md recommends for any fleet: one fork per server, and pipelining
            # (one process per task on the server instead of copy + chmod + run + rm).
            "ANSIBLE_FORKS": str(max(len(SERVERS), 10)),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "false",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "GREENLIGHT_DEPLOY_ACTOR": "make bench",
            # Per-task times at the end of each log (which tasks the wall time goes to).
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
            "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all",
        })
        self.env.pop("ANSIBLE_CONFIG", None)
        self.env.pop("ANSIBLE_STDOUT_CALLBACK", None)

    # -- helpers ---------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def sh(self, argv: list[str], check: bool = True, timeout: float = 600, **kwargs: t.Any) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
        if check and proc.returncode != 0:
            raise RuntimeError("%s failed (exit %d):\n%s%s" % (shlex.join(argv), proc.returncode, proc.stdout[-3000:],
                                                               proc.stderr[-3000:]))
        return proc

    def server_sh(self, server: str, script: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.sh(["docker", "exec", server, "sh", "-c", script], check=check, timeout=timeout)

    def playbook(self, label: str, playbook: str, *extra: str, check: bool = True) -> dict[str, t.Any]:
        """Run one ansible-playbook; return wall time, rc, the recap, the slowest tasks and the
        per-server summary deploy.yml/rollback.yml print (state, phases). Not with
        greenlight_deploy_summary_file: writing that file costs a task and counts as a change."""
        log_file = self.results_dir / ("%s.log" % label)
        argv = ["ansible-playbook", str(REPO / "playbooks" / playbook), "-i", str(HERE / "inventory"), *extra]
        with open(log_file, "w") as handle:  # written as it runs: `tail -f` it to watch
            handle.write("$ %s\n" % shlex.join(argv))
            handle.flush()
            started = time.monotonic()
            # The controller's part: CPU time of ansible-playbook and everything it starts on this
            # machine (its forks, the `docker exec` clients that carry each task); the servers'
            # processes run inside their containers, not as its children.
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, text=True, env=self.env,
                                  cwd=str(REPO), timeout=900, check=False)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds = time.monotonic() - started
            controller_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        proc.stdout = log_file.read_text()
        recap = {}
        for match in re.finditer(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                                 proc.stdout, re.M):
            recap[match.group(1)] = {"ok": int(match.group(2)), "changed": int(match.group(3)),
                                     "unreachable": int(match.group(4)), "failed": int(match.group(5))}
        summary_data = parse_summary(proc.stdout)
        if check and proc.returncode != 0:
            raise RuntimeError("%s failed (exit %d), log: %s\n%s" % (label, proc.returncode, log_file,
                                                                     proc.stdout[-3000:]))
        tasks = []
        if "TASKS RECAP" in proc.stdout:
            for line in proc.stdout.split("TASKS RECAP", 1)[1].splitlines():
                match = re.match(r"^(.*?) -{2,} (\d+\.\d+)s$", line.strip())
                if match:
                    tasks.append((match.group(1).strip(), float(match.group(2))))
        log("%s: %.1fs, controller CPU %.2fs (exit %d)" % (label, seconds, controller_cpu, proc.returncode))
        return {"seconds": round(seconds, 2), "controller_cpu_s": round(controller_cpu, 2), "rc": proc.returncode,
                "recap": recap, "summary": summary_data, "slowest": tasks[:8], "tasks": tasks,
                "log": str(log_file.relative_to(REPO))}

    def deploy(self, label: str, tag: str, hosts: str) -> dict[str, t.Any]:
        return self.playbook(label, "deploy.yml", "-e", "app_image_tag=%s" % tag,
                             "-e", "greenlight_deploy_hosts=%s" % hosts)

    def rollback(self, label: str, hosts: str) -> dict[str, t.Any]:
        return self.playbook(label, "rollback.yml", "-e", "greenlight_deploy_hosts=%s" % hosts)

    def release_via_nginx(self) -> t.Optional[str]:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            return response.getheader("X-Release") if response.status == 200 else None
        except OSError:
            return None
        finally:
            conn.close()

    def wait_release(self, release: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        good = 0
        while good < 10:
            if time.monotonic() > deadline:
                raise RuntimeError("nginx on 127.0.0.1:%s never settled on release %s" % (self.port, release))
            good = good + 1 if self.release_via_nginx() == release else 0
            time.sleep(0.05)

    def under_load(self, label: str, action: t.Callable[[], t.Any], new_release: str,
                   spans: t.Optional[t.Callable[[t.Any], list]] = None) -> dict[str, t.Any]:
        """Load before, during and after `action`; figures for the steady and the deploy windows.
        `spans`: the deploy's phases (name, start, end in epoch seconds) from its outcome; default
        the engine's phase_log in glbench-1's releases.jsonl."""
        load = LoadGenerator(self.port, threads=self.args.threads, rate=self.args.rate, paths=("/health", "/"),
                             max_seconds=600, max_requests=400000).start()
        try:
            time.sleep(STEADY_SECONDS)
            began, wall_began = time.monotonic(), time.time()
            outcome = action()
            ended = time.monotonic()
            time.sleep(AFTER_SECONDS)
        finally:
            load.stop()
        steady = load.window_stats(load.started_at + 1.0, began)
        during = load.window_stats(began, ended)
        after = load.window_stats(ended, load.stopped_at)
        total = load.window_stats(load.started_at, load.stopped_at)
        first_new = min((r[0] for r in load.results if r[2] == new_release and 200 <= r[1] < 300 and r[0] >= began),
                        default=None)
        figures = {
            "steady": steady, "during": during, "after": after, "total": total,
            "stale_retries": load.stale_retries,
            "wall_seconds": round(ended - began, 2),
            "new_release_after_s": None if first_new is None else round(first_new - began, 2),
            "outcome": outcome,
        }
        (self.results_dir / ("%s.load.json" % label)).write_text(json.dumps(figures, indent=2, default=str))
        # Every request and the deploy's phases, for the timeline charts (bench/charts.py).
        save_timeline(self.results_dir / ("%s.timeline.json" % label), load.results, began, ended, wall_began,
                      spans(outcome) if spans else self.engine_spans(wall_began), label, load.stopped_at)
        log("%s under load: sent %d (%.0f/s), failed %d, longest gap %.2fs, p50/p99 %s/%s ms (steady %s/%s ms)"
            % (label, total["sent"], during["rate"], total["failed"], total["longest_gap_s"], during["p50_ms"],
               during["p99_ms"], steady["p50_ms"], steady["p99_ms"]))
        return figures

    def engine_spans(self, since: float) -> list[tuple[str, float, float]]:
        """The engine's phases on glbench-1 since `since` (epoch): phase_log in releases.jsonl."""
        proc = self.server_sh(SERVERS[0], "tail -n 5 %s" % RELEASES_LOG, check=False)
        return engine_spans([json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")], since)

    # -- stages ----------------------------------------------------------------------------------
    def machine(self) -> None:
        mem_kb = 0
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
        self.figures["machine"] = {
            "nproc": os.cpu_count(),
            "mem_gib": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(),
            "cpu": self._cpu_model(),
            "python": platform.python_version(),
            "ansible_core": self.sh([str(REPO / ".venv" / "bin" / "ansible"), "--version"]).stdout.splitlines()[0],
            "docker": self.sh(["docker", "version", "-f", "{{.Server.Version}}"]).stdout.strip(),
            "loadavg_start": os.getloadavg(),
        }

    @staticmethod
    def _cpu_model() -> str:
        try:
            with open("/proc/cpuinfo") as handle:
                for line in handle:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.machine()

    def remove_servers(self) -> None:
        for name in SERVERS:
            self.sh(["docker", "rm", "-f", "-v", name], check=False)
            self.sh(["docker", "volume", "rm", "-f", "%s-docker" % name], check=False)

    def reuse_servers(self) -> bool:
        """--reuse: the six servers a --keep run left, if all run; glbench-1's published nginx port."""
        running = self.sh(["docker", "ps", "--format", "{{.Names}}"]).stdout.split()
        if not all(name in running for name in SERVERS):
            return False
        port = self.sh(["docker", "port", SERVERS[0], "80/tcp"], check=False).stdout.strip()
        if not port.startswith("127.0.0.1:"):
            return False
        self.port = int(port.split(":", 1)[1].splitlines()[0])
        self.figures["start_servers_s"] = 0.0
        self.figures["reused"] = True
        # The last stage of that run left the naive script's release on glbench-1: gone, so the
        # first deploy below puts greenlight's v1 live behind nginx again.
        self.server_sh(SERVERS[0], "docker rm -f todo-naive >/dev/null 2>&1 || true")
        log("reusing the 6 server containers of a --keep run; glbench-1's nginx is on 127.0.0.1:%d" % self.port)
        return True

    def start_servers(self) -> None:
        if self.args.reuse and self.reuse_servers():
            return
        self.remove_servers()
        self.port = self.args.port or free_port()
        started = time.monotonic()
        script = ["source %s" % shlex.quote(str(REPO / "testbed" / "server-run.sh"))]
        for index, name in enumerate(SERVERS):
            publish = "-p 127.0.0.1:%d:80" % self.port if index == 0 else ""
            script.append("server_run %s %s %s" % (name, SERVER_IMAGE, publish))
        for name in SERVERS:
            script.append("server_wait_docker %s" % name)
        self.sh(["bash", "-c", " && ".join(script)])
        self.figures["start_servers_s"] = round(time.monotonic() - started, 1)
        log("6 server containers up in %.1fs; glbench-1's nginx will be on 127.0.0.1:%d"
            % (self.figures["start_servers_s"], self.port))

    def install_engine(self) -> dict[str, t.Any]:
        """--reuse: instead of setup.yml, this checkout's engine archive onto the six servers (what
        container_swap's fast call and deploy.sh run; root-owned 0644 like deploy_script's copy)."""
        sys.path.insert(0, str(REPO / ".collections"))
        from ansible_collections.greenlight.deploy.plugins.lookup.engine_archive import engine_archive_bytes
        archive = self.results_dir / "greenlight.zip"
        archive.write_bytes(engine_archive_bytes())
        target = "/usr/local/lib/greenlight/todo/greenlight.zip"
        started = time.monotonic()
        for name in SERVERS:
            self.sh(["docker", "cp", str(archive), "%s:%s.new" % (name, target)])
            self.server_sh(name, "chown root:root {0}.new && chmod 0644 {0}.new && mv -f {0}.new {0}".format(target))
        log("reused servers: engine archive installed, setup.yml not re-run")
        return {"seconds": round(time.monotonic() - started, 2), "controller_cpu_s": 0.0, "rc": 0, "recap": {},
                "summary": {}, "slowest": [], "tasks": [], "log": "", "reused": True}

    def prepare(self) -> None:
        if self.figures.get("reused"):
            self.figures["setup"] = self.install_engine()
        else:
            self.figures["setup"] = self.playbook("setup-6-servers", "setup.yml")
        self.figures["first_deploy"] = self.deploy("deploy-v1-6-servers", "v1", "staging")
        # Every timed deploy below finds its image on the server (docker pull only checks the tag).
        started = time.monotonic()
        procs = [subprocess.Popen(["docker", "exec", name, "docker", "pull", "-q",
                                   "%s:v2" % IMAGE_REPOSITORY], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for name in SERVERS]
        for proc in procs:
            if proc.wait(timeout=600) != 0:
                raise RuntimeError("docker pull of v2 failed: %s" % proc.stderr.read().decode())
        self.figures["prepull_s"] = round(time.monotonic() - started, 1)
        self.wait_release("v1")

    def greenlight_under_load(self) -> None:
        self.figures["greenlight"] = self.under_load(
            "greenlight-v1-v2", lambda: self.deploy("greenlight-deploy-v2", "v2", "fleet1"), "v2")
        self.wait_release("v2")
        self.figures["noop"] = self.deploy("greenlight-noop-v2", "v2", "fleet1")
        self.figures["rollback"] = self.under_load(
            "greenlight-rollback", lambda: self.rollback("greenlight-rollback-v1", "fleet1"), "v1")
        self.wait_release("v1")

    def fleet(self) -> None:
        fleet: dict[str, t.Any] = {}
        for size in FLEETS:
            fleet[str(size)] = {"deploy": self.deploy("fleet%d-deploy-v2" % size, "v2", "fleet%d" % size)}
            if size != FLEETS[-1]:
                fleet[str(size)]["rollback"] = self.rollback("fleet%d-rollback-v1" % size, "fleet%d" % size)
        # Controller fan-out alone: a no-op deploy on one server and on six.
        fleet["noop1"] = self.deploy("fleet1-noop-v2", "v2", "fleet1")
        fleet["noop6"] = self.deploy("fleet6-noop-v2", "v2", "fleet6")
        # ansible-playbook's own floor: an empty play against one server (start-up, inventory,
        # callbacks), what no change to our playbooks can remove.
        fleet["empty"] = self.playbook("empty-play", str(HERE / "empty.yml"))
        self.figures["fleet"] = fleet
        # The same engine without Ansible: deploy.sh on the server, reached like the naive script
        # (docker exec here, ssh in real life), v1 -> v2 with the image present, then a no-op.
        self.deploy_sh("deploy-sh-rollback-v1", "rollback")
        self.wait_release("v1")
        self.figures["deploy_sh"] = self.deploy_sh("deploy-sh-v2", "v2")
        self.wait_release("v2")
        self.figures["deploy_sh_noop"] = self.deploy_sh("deploy-sh-noop-v2", "v2")

    def deploy_sh(self, label: str, *args: str) -> dict[str, t.Any]:
        argv = ["docker", "exec", "-u", "deploy", SERVERS[0], "/opt/todo/deploy.sh", *args]
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        seconds = time.monotonic() - started
        (self.results_dir / ("%s.log" % label)).write_text("$ %s\n%s\n%s" % (shlex.join(argv), proc.stdout,
                                                                             proc.stderr))
        if proc.returncode != 0:
            raise RuntimeError("%s failed (exit %d): %s" % (label, proc.returncode, (proc.stdout + proc.stderr)[-2000:]))
        log("%s: %.1fs" % (label, seconds))
        return {"seconds": round(seconds, 2), "rc": proc.returncode, "output": proc.stdout[-3000:]}

    def naive(self) -> None:
        server = SERVERS[0]
        # greenlight's containers make way; the naive container gets its own data directory, the
        # same env file, the same static root and the same nginx.
        self.server_sh(server, "docker ps -aq --filter label=greenlight.app=todo | xargs -r docker rm -f >/dev/null;"
                               " install -d -o 10001 -g 10001 -m 0750 /opt/todo-naive/data")
        self.sh(["docker", "cp", str(HERE / "naive-deploy.sh"), "%s:/usr/local/bin/naive-deploy.sh" % server])
        self.server_sh(server, "printf 'server 127.0.0.1:%d;\\n' > %s && nginx -t -q && nginx -s reload"
                       % (NAIVE_PORT, UPSTREAM_FILE))
        first = self.naive_deploy("naive-deploy-v1", "v1")
        self.wait_release("v1")
        self.figures["naive_first"] = first
        self.figures["naive"] = self.under_load("naive-v1-v2", lambda: self.naive_deploy("naive-deploy-v2", "v2"), "v2",
                                                spans=lambda outcome: outcome["spans"])
        # Without load, like fleet1's greenlight deploy: v1 again, then the v1 -> v2 that is compared.
        self.naive_deploy("naive-deploy-v1-again", "v1")
        self.figures["naive_quiet"] = self.naive_deploy("naive-deploy-v2-quiet", "v2")

    def naive_deploy(self, label: str, tag: str) -> dict[str, t.Any]:
        # bash -x with the time in PS4: the time of each step, without changing the script.
        # (bash ignores PS4 from the environment when run as root, so it is set inside.)
        argv = ["docker", "exec", "-e", "DOCKER_CONFIG=/root/.docker", SERVERS[0], "bash", "-c",
                'PS4="+ \\${EPOCHREALTIME} "; set -x; . /usr/local/bin/naive-deploy.sh "$1"', "bash",
                "%s:%s" % (IMAGE_REPOSITORY, tag)]
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        seconds = time.monotonic() - started
        traced = [(float(m.group(1)), m.group(2)) for m in
                  (re.match(r"^\++ (\d+\.\d+) (.*)$", line) for line in proc.stderr.splitlines()) if m]
        phases: dict[str, float] = {}
        spans = []  # (step, start, end) in epoch seconds, for the timeline chart
        for (at, command), (until, _next) in zip(traced, traced[1:]):
            match = re.match(r"^docker (pull|stop|rm|run|exec|cp)\b", command)
            if match:
                name = {"exec": "migrate", "cp": "static"}.get(match.group(1), match.group(1))
                phases[name] = round(phases.get(name, 0.0) + until - at, 2)
                spans.append((name, at, until))
        (self.results_dir / ("%s.log" % label)).write_text("$ %s\n%s\n%s" % (shlex.join(argv), proc.stdout,
                                                                             proc.stderr))
        if proc.returncode != 0:
            raise RuntimeError("%s failed (exit %d): %s" % (label, proc.returncode, proc.stderr[-2000:]))
        log("%s: %.1fs (%s)" % (label, seconds, ", ".join("%s %.1fs" % item for item in phases.items())))
        return {"seconds": round(seconds, 2), "rc": proc.returncode, "phases": phases, "spans": spans}

    def run(self) -> int:
        self.machine()
        log("results and logs in %s" % self.results_dir.relative_to(REPO))
        try:
            self.start_servers()
            self.prepare()
            self.greenlight_under_load()
            self.fleet()
            self.naive()
        finally:
            self.figures["machine"]["loadavg_end"] = os.getloadavg()
            self.figures["total_s"] = round(self.elapsed(), 1)
            (self.results_dir / "figures.json").write_text(json.dumps(self.figures, indent=2, default=str))
            if not self.args.keep:
                self.remove_servers()
        rows, verdicts = table(self.figures)
        print()
        print(render_table(rows))
        print()
        for line in verdicts:
            print(line)
        print()
        for line in speed_targets(rows):
            print(line)
        if self.args.output:
            write_markdown(Path(self.args.output), render_results(self.figures, rows, verdicts))
            log("wrote %s" % self.args.output)
            # The request timelines beside it (docs/img/bench-*.png, shown by docs/benchmarks.md).
            for chart in render_bench(self.results_dir, Path(self.args.output).resolve().parent / "img"):
                log("wrote %s" % chart["path"])
        log("done in %.0fs" % self.elapsed())
        return 0


def parse_summary(stdout: str) -> dict[str, dict[str, t.Any]]:
    """Per server, the state and phase timings from the summary deploy.yml/rollback.yml print:
    "- glbench-1: DEPLOYED | live: v2 | previous: v1" ... "phases: pull 0.13s, plan 0.01s, ..."."""
    found: dict[str, dict[str, t.Any]] = {}
    host = None
    for line in stdout.splitlines():
        match = re.match(r'^\s*"- ([^:\s]+): ([A-Z-]+)', line)
        if match:
            host = match.group(1)
            found[host] = {"state": match.group(2).lower(), "phases": {}}
            continue
        match = re.match(r'^\s*"\s+phases: (.*)\(total', line)
        if match and host:
            found[host]["phases"] = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)s", match.group(1))}
    return found


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _ms(value: t.Optional[float]) -> str:
    return "-" if value is None else "%.0f ms" % value


def phases_of(result: dict[str, t.Any], host: str = SERVERS[0]) -> dict[str, float]:
    return (result.get("summary", {}).get(host) or {}).get("phases") or {}


def yes(ok: t.Any) -> str:
    return "yes" if ok else "NO"


def _errors(window: dict[str, t.Any]) -> str:
    if not window["errors"]:
        return ""
    return " (%s)" % ", ".join("%s: %d" % item for item in sorted(window["errors"].items()))


def table(f: dict[str, t.Any]) -> tuple[list[list[str]], list[str]]:
    """The result table and one sentence per target (met, or missed and why)."""
    g, n = f["greenlight"], f["naive"]
    gd, nd, gs, ns = g["during"], n["during"], g["steady"], n["steady"]
    machine = f["machine"]
    busy = max(machine["loadavg_start"][0], machine.get("loadavg_end", [0])[0])
    busy_note = ("the machine was busy (load average %.1f on %d cores) with other work, so every figure that "
                 "depends on CPU time is inflated" % (busy, machine["nproc"])) if busy > machine["nproc"] else ""
    rows = [["figure", "greenlight", "naive script", "target", "met"]]
    verdicts: list[str] = []

    rate_ok = gd["rate"] >= TARGET_RATE * 0.95 and nd["rate"] >= TARGET_RATE * 0.95
    rows.append(["load during the deploy", "%.0f req/s" % gd["rate"], "%.0f req/s" % nd["rate"],
                 ">= %d req/s" % TARGET_RATE, yes(rate_ok)])
    if not rate_ok:
        verdicts.append("Load rate missed: the generator (%d threads, half keep-alive) reached %.0f req/s during the "
                        "greenlight deploy and %.0f req/s during the naive one; a thread waits for its answer before "
                        "the next request, so slow answers lower the rate%s." % (
                            f["threads"], gd["rate"], nd["rate"], "; " + busy_note if busy_note else ""))
    rows.append(["requests sent (whole load run)", str(g["total"]["sent"]), str(n["total"]["sent"]), "", ""])
    rows.append(["failed: connection errors + non-2xx", "%d%s" % (g["total"]["failed"], _errors(g["total"])),
                 "%d%s" % (n["total"]["failed"], _errors(n["total"])), "greenlight 0", yes(g["total"]["failed"] == 0)])
    verdicts.append("Failed requests: greenlight %d, naive script %d (%s of its requests during the deploy)." % (
        g["total"]["failed"], n["total"]["failed"],
        "%.0f%%" % (100.0 * nd["failed"] / nd["sent"]) if nd["sent"] else "-"))
    rows.append(["keep-alive retries (stale connection)", str(g["stale_retries"]), str(n["stale_retries"]), "", ""])
    rows.append(["longest gap without a 2xx answer", "%.2f s" % g["total"]["longest_gap_s"],
                 "%.2f s" % n["total"]["longest_gap_s"], "", ""])
    rows.append(["p50 latency: steady / during deploy", "%s / %s" % (_ms(gs["p50_ms"]), _ms(gd["p50_ms"])),
                 "%s / %s" % (_ms(ns["p50_ms"]), _ms(nd["p50_ms"])), "", ""])
    p99_ok = bool(gd["p99_ms"] is not None and gs["p99_ms"] and gd["p99_ms"] <= TARGET_P99_FACTOR * gs["p99_ms"])
    rows.append(["p99 latency: steady / during deploy", "%s / %s" % (_ms(gs["p99_ms"]), _ms(gd["p99_ms"])),
                 "%s / %s" % (_ms(ns["p99_ms"]), _ms(nd["p99_ms"])), "greenlight <= %gx steady" % TARGET_P99_FACTOR,
                 yes(p99_ok)])
    if p99_ok:
        verdicts.append("p99 latency met: %.0f ms during the deploy against %.0f ms steady." % (gd["p99_ms"], gs["p99_ms"]))
    elif gs["p99_ms"]:
        verdicts.append("p99 latency missed: %.0f ms during the deploy against %.0f ms steady (%.1fx). The server "
                        "shares this machine's %d cores with the controller and the load generator; during the "
                        "deploy it also runs Django's migrate and boots gunicorn (CPU-bound, %.1f s + %.1f s here)%s." % (
                            gd["p99_ms"], gs["p99_ms"], gd["p99_ms"] / gs["p99_ms"], machine["nproc"],
                            phases_of(g["outcome"]).get("pre_switch", 0), phases_of(g["outcome"]).get("health", 0),
                            "; " + busy_note if busy_note else ""))
    rows.append(["new release answers after", "%s s" % g["new_release_after_s"], "%s s" % n["new_release_after_s"],
                 "", ""])
    gw, nw = g["outcome"]["seconds"], n["outcome"]["seconds"]
    ratio = gw / nw if nw else float("inf")
    quiet_g, quiet_n = f["fleet"]["1"]["deploy"]["seconds"], f["naive_quiet"]["seconds"]
    quiet_ratio = quiet_g / quiet_n if quiet_n else float("inf")
    rows.append(["deploy wall time, image present, no load", "%.1f s" % quiet_g, "%.1f s" % quiet_n,
                 "ratio <= %g" % TARGET_WALL_RATIO,
                 "%s (%.2fx)" % (yes(quiet_ratio <= TARGET_WALL_RATIO), quiet_ratio)])
    rows.append(["deploy wall time, image present, under load", "%.1f s" % gw, "%.1f s" % nw, "",
                 "(%.2fx)" % ratio])
    if "deploy_sh" in f:
        sh_seconds = f["deploy_sh"]["seconds"]
        sh_ratio = sh_seconds / quiet_n if quiet_n else float("inf")
        rows.append(["same swap by deploy.sh on the server (no Ansible), no load", "%.1f s" % sh_seconds,
                     "%.1f s" % quiet_n, "", "(%.2fx)" % sh_ratio])
        rows.append(["no-op by deploy.sh on the server", "%.1f s" % f["deploy_sh_noop"]["seconds"], "", "", ""])
        verdicts.append(
            "The same v1 -> v2 through deploy.sh on the server, reached like the naive script (one command, no "
            "Ansible): %.1f s against the naive script's %.1f s (%.2fx); its no-op %.1f s. The difference to "
            "deploy.yml's %.1f s is what ansible-playbook costs; the difference to the naive script is what the "
            "engine waits for that the script skips (migrate in a one-off container before the switch, health "
            "gate, verify through nginx, drain, graceful stop)." % (
                sh_seconds, quiet_n, sh_ratio, f["deploy_sh_noop"]["seconds"], quiet_g))
    phases = phases_of(g["outcome"])
    swap = sum(v for k, v in phases.items() if k != "pull")
    naive_steps = ", ".join("%s %.1f s" % tuple(item) for item in (n["outcome"].get("phases") or {}).items())
    quiet_steps = ", ".join("%s %.1f s" % tuple(item) for item in (f["naive_quiet"].get("phases") or {}).items())
    quiet_phases = phases_of(f["fleet"]["1"]["deploy"])
    quiet_swap = sum(v for k, v in quiet_phases.items() if k != "pull")
    verdicts.append(
        "Wall time without load %s: greenlight %.1f s (swap on the server %.1f s, of which drain %.1f s; "
        "ansible-playbook and its tasks the other %.1f s) against %.1f s for the naive script (%s): %.2fx." % (
            "met" if quiet_ratio <= TARGET_WALL_RATIO else "missed", quiet_g, quiet_swap, quiet_phases.get("drain", 0),
            quiet_g - quiet_swap, quiet_n, quiet_steps, quiet_ratio))
    if ratio <= TARGET_WALL_RATIO:
        verdicts.append("Wall time under load: greenlight %.1f s against %.1f s for the naive script (%.2fx); naive "
                        "steps: %s." % (gw, nw, ratio, naive_steps))
    else:
        verdicts.append(
            "Wall time under load: greenlight took %.1f s against %.1f s (%.2fx). Of those %.1f s, the swap on the server "
            "took %.1f s (%s), of which %.1f s is the drain wait (nginx's old workers finish their requests before the "
            "old release is stopped; the naive script has no such step) and %.1f s the graceful stop of the old "
            "release; the other %.1f s are ansible-playbook itself (start-up, tasks over `docker exec`, templating; "
            "slowest tasks: %s). "
"First answer from the new release: naive script after %s s (with %d failed requests), greenlight after "
            "%s s (with %d)." % (
                gw, nw, ratio, gw, swap, ", ".join("%s %.1f" % (k, v) for k, v in phases.items() if v >= 0.1 and k != "pull"),
                phases.get("drain", 0), phases.get("stop_old", 0), gw - swap - phases.get("pull", 0),
                ", ".join("%s %.1f s" % tuple(item) for item in g["outcome"].get("slowest", [])[:4]),
                n["new_release_after_s"], n["total"]["failed"], g["new_release_after_s"], g["total"]["failed"])
            + " Naive steps: %s." % naive_steps)
    noop = f["noop"]
    noop_changed = sum(h["changed"] for h in noop["recap"].values())
    noop_ok = noop["seconds"] <= TARGET_NOOP_SECONDS and noop_changed == 0
    rows.append(["no-op re-deploy", "%.1f s, changed=%d" % (noop["seconds"], noop_changed), "(redeploys always)",
                 "<= %g s, changed=0" % TARGET_NOOP_SECONDS, yes(noop_ok)])
    verdicts.append("No-op re-deploy %s: %.1f s with changed=%d. Slowest tasks: %s%s." % (
        "missed" if not noop_ok else "met", noop["seconds"], noop_changed,
        ", ".join("%s %.2f s" % tuple(item) for item in noop.get("slowest", [])[:5]) or "-",
        "; " + busy_note if busy_note and not noop_ok else ""))
    quiet = f["fleet"]["1"]["deploy"]
    real = {k: v for k, v in phases_of(quiet).items() if k in REAL_WORK_PHASES}
    overhead = quiet["seconds"] - sum(real.values())
    overhead_ok = overhead <= TARGET_OVERHEAD_SECONDS
    rows.append(["deploy overhead: wall - engine's real work, no load",
                 "%.1f s (%.1f s - %.1f s)" % (overhead, quiet["seconds"], sum(real.values())), "",
                 "<= %g s" % TARGET_OVERHEAD_SECONDS, yes(overhead_ok)])
    verdicts.append("Deploy overhead %s: %s" % ("met" if overhead_ok else "missed", where_the_time_goes(f, quiet)))
    rb = f["rollback"]
    rows.append(["rollback v2 -> v1 under load", "%.1f s, %d failed" % (rb["outcome"]["seconds"], rb["total"]["failed"]),
                 "(no rollback)", "", ""])
    fleet = f["fleet"]
    one = fleet["1"]["deploy"]["seconds"]
    for size in FLEETS:
        seconds = fleet[str(size)]["deploy"]["seconds"]
        last = size == FLEETS[-1]
        rows.append(["fleet deploy v1 -> v2, %d server%s" % (size, "s" if size > 1 else ""), "%.1f s" % seconds, "",
                     "<= %gx one server" % TARGET_FLEET_FACTOR if last else "",
                     "%s (%.2fx)" % (yes(seconds <= TARGET_FLEET_FACTOR * one), seconds / one) if last else ""])
    for size in FLEETS[:-1]:
        if "rollback" in fleet[str(size)]:
            rows.append(["fleet rollback, %d server%s" % (size, "s" if size > 1 else ""),
                         "%.1f s" % fleet[str(size)]["rollback"]["seconds"], "", "", ""])
    rows.append(["fleet no-op, 1 / 6 servers", "%.1f s / %.1f s" % (fleet["noop1"]["seconds"], fleet["noop6"]["seconds"]),
                 "", "", ""])
    cpu1, cpu6 = fleet["noop1"]["controller_cpu_s"], fleet["noop6"]["controller_cpu_s"]
    cpu_ratio = cpu6 / cpu1 if cpu1 else float("inf")
    cpu_ok = cpu_ratio <= TARGET_CONTROLLER_FACTOR
    rows.append(["controller CPU of a no-op, 1 / 6 servers", "%.2f s / %.2f s" % (cpu1, cpu6), "",
                 "6 <= %gx 1" % TARGET_CONTROLLER_FACTOR, "%s (%.2fx)" % (yes(cpu_ok), cpu_ratio)])
    verdicts.append(
        "Fleet controller part %s: a no-op deploy cost the controller %.2f s of CPU for one server and %.2f s for six "
        "(%.2fx; an empty play costs %.2f s): ansible-playbook's start-up is paid once, each server adds %.2f s. "
        "Wall time %.1f s / %.1f s: the six servers' own processes share this machine's %d cores." % (
            "met" if cpu_ok else "missed", cpu1, cpu6, cpu_ratio, fleet["empty"]["controller_cpu_s"],
            (cpu6 - cpu1) / 5, fleet["noop1"]["seconds"], fleet["noop6"]["seconds"], machine["nproc"]))
    six = fleet[str(FLEETS[-1])]["deploy"]
    if six["seconds"] <= TARGET_FLEET_FACTOR * one:
        verdicts.append("Fleet met: 6 servers took %.1f s, %.2fx one server (%.1f s)." % (
            six["seconds"], six["seconds"] / one, one))
    else:
        busy_phases = ("pre_switch", "health", "start", "stop_old")
        per_host = [sum(phases_of(six, host).get(k, 0) for k in busy_phases) for host in SERVERS]
        single = sum(phases_of(fleet["1"]["deploy"]).get(k, 0) for k in busy_phases)
        verdicts.append(
            "Fleet missed: 6 servers took %.1f s, %.2fx one server (%.1f s). All six 'servers' are containers on this "
            "one machine's %d cores: the CPU-bound steps (migrate, gunicorn boot, health, graceful stop) took %.1f s "
            "per server on average with six at once against %.1f s alone; the controller side alone (no-op deploy) "
            "went from %.1f s to %.1f s. On real servers each has its own CPUs and only the controller part grows." % (
                six["seconds"], six["seconds"] / one, one, machine["nproc"], sum(per_host) / len(per_host), single,
                fleet["noop1"]["seconds"], fleet["noop6"]["seconds"]))
    return rows, verdicts


ISSUE_11_ROWS = ("no-op re-deploy", "deploy overhead: wall - engine's real work, no load",
                 "controller CPU of a no-op, 1 / 6 servers")


def speed_targets(rows: list[list[str]]) -> list[str]:
    """Issue 11's three speed targets, one line each: figure, target, met or missed."""
    lines = ["Issue 11 speed targets:"]
    for row in rows[1:]:
        if row[0] in ISSUE_11_ROWS:
            lines.append("  %s: %s (target %s): %s" % (row[0], row[1], row[3],
                                                      "met" if row[4].startswith("yes") else "MISSED " + row[4][2:].strip()))
    return lines


def where_the_time_goes(f: dict[str, t.Any], run: dict[str, t.Any]) -> str:
    """One sentence: where each second of a deploy's wall time went (issue 11)."""
    phases = phases_of(run)
    real = {k: v for k, v in phases.items() if k in REAL_WORK_PHASES}
    bookkeeping = {k: v for k, v in phases.items() if k not in REAL_WORK_PHASES}
    empty = f["fleet"]["empty"]["seconds"]
    tasks = run.get("tasks") or []
    engine_tasks = [seconds for name, seconds in tasks if "container_swap" in name]
    other_tasks = sum(seconds for name, seconds in tasks if "container_swap" not in name)
    rest = run["seconds"] - empty - sum(seconds for _, seconds in tasks)
    return (
        "%.1f s wall = real work %.1f s (%s) + engine bookkeeping %.1f s (%s) + module start on the server "
        "(container_swap task time minus its phases) %.1f s + the other %d tasks %.1f s + ansible-playbook's "
        "start-up (an empty play) %.1f s + the rest %.1f s (between tasks, play start and end)." % (
            run["seconds"], sum(real.values()), ", ".join("%s %.2f" % item for item in real.items()) or "-",
            sum(bookkeeping.values()), ", ".join("%s %.2f" % item for item in bookkeeping.items()) or "-",
            sum(engine_tasks) - sum(v for k, v in phases.items() if k != "pull"), len(tasks) - len(engine_tasks),
            other_tasks, empty, rest))


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


RESULTS_START = "<!-- bench/run.py results: start -->"
RESULTS_END = "<!-- bench/run.py results: end -->"


def render_results(f: dict[str, t.Any], rows: list[list[str]], verdicts: list[str]) -> str:
    """The generated part of docs/benchmarks.md (between the two markers)."""
    m = f["machine"]
    lines = [
        RESULTS_START,
        "## Latest results",
        "",
        "Written by `make bench` on %s (UTC), in %.0f s." % (f["date"], f["total_s"]),
        "",
        "Machine: %d cores (%s), %.1f GiB memory, kernel %s, Docker %s, %s, Python %s; load average %.1f at the "
        "start and %.1f at the end of the run." % (m["nproc"], m["cpu"], m["mem_gib"], m["kernel"], m["docker"],
                                                     m["ansible_core"], m["python"], m["loadavg_start"][0],
                                                     m.get("loadavg_end", [0])[0]),
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join("---" for _ in rows[0]) + "|",
    ]
    for row in rows[1:]:
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    if f.get("reused"):
        lines += ["", "Preparation (not a benchmark): the 6 server containers of an earlier `--keep` run (`--reuse`: "
                  "setup.yml not re-run, this checkout's engine archive copied onto them), first deploy of v1 in "
                  "%.0f s." % f["first_deploy"]["seconds"], ""]
    else:
        lines += ["", "Preparation (not a benchmark): 6 server containers started in %.0f s, setup.yml on all six in "
                  "%.0f s, first deploy of v1 (with the image pull) in %.0f s." % (
                      f["start_servers_s"], f["setup"]["seconds"], f["first_deploy"]["seconds"]), ""]
    lines += ["- %s" % verdict for verdict in verdicts]
    lines += ["", "Raw figures and every log: `bench/results/%s/` (not committed)." % f["started_utc"], RESULTS_END]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, results: str) -> None:
    """Replace the generated section of the report, keeping the hand-written parts."""
    text = path.read_text() if path.exists() else ""
    if RESULTS_START in text and RESULTS_END in text:
        before = text[:text.index(RESULTS_START)]
        after = text[text.index(RESULTS_END) + len(RESULTS_END):].lstrip("\n")
        text = before + results + ("\n" + after if after else "")
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "# Benchmarks\n\n") + results
    path.write_text(text)


def main(argv: t.Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="requests per second (default 200)")
    parser.add_argument("--threads", type=int, default=256, help="load generator threads (half keep-alive)")
    parser.add_argument("--port", type=int, default=0, help="127.0.0.1 port for glbench-1's nginx (default: free)")
    parser.add_argument("--keep", action="store_true", help="keep the server containers afterwards")
    parser.add_argument("--reuse", action="store_true",
                        help="use the server containers a --keep run left, if all six run: setup.yml is not re-run, "
                             "this checkout's engine archive is copied onto them")
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"),
                        help="Markdown report to write (default docs/benchmarks.md; empty: none)")
    args = parser.parse_args(argv)
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
