"""The deploy summary (roles/release, summary.txt.j2) shows how far a failed server's last phase
got - the engine's outcome.progress, e.g. which pre-switch command ran or how many health
attempts - and nothing of the kind for a server that did not fail (issue 18)."""

from __future__ import annotations

from test_preflight_values import failure, run_play

PLAY = """
- name: Test | summary
  hosts: cases
  gather_facts: false
  tasks:
    - name: Test | Record an outcome
      ansible.builtin.set_fact:
        release_outcome: "{{ outcome }}"
    - name: Test | Summary
      ansible.builtin.import_role:
        name: greenlight.deploy.release
        tasks_from: summary.yml
"""


def test_the_summary_shows_how_far_the_failed_phase_got(tmp_path):
    hosts = {
        "web1": "outcome: {state: failed, phase: pre_switch, live: v1, release: v2, previous: v1,\n"
                "          phases: {plan: 0.01, pre_switch: 4.2}, message: 'pre-switch command exited 1',\n"
                "          progress: 'pre_switch ran 4.2 s, at command 2 of 2: python manage.py migrate'}\n",
        "web2": "outcome: {state: deployed, live: v2, release: v2, previous: v1, phases: {plan: 0.01},\n"
                "          message: 'release v2 is live', progress: null}\n",
    }
    result = run_play(tmp_path, PLAY, hosts)
    assert failure(result, "web1")[0].endswith("Summary | Fail the servers that failed")
    assert failure(result, "web2") == (None, "")
    lines = [line for play in result["plays"] for task in play["tasks"]
             if task["task"]["name"].endswith("Summary | Which server runs what")
             for outcome in task["hosts"].values() for line in outcome.get("msg") or []]
    assert "- web1: FAILED in pre_switch | live: v1 | wanted: v2" in lines, lines
    block = lines[lines.index("- web1: FAILED in pre_switch | live: v1 | wanted: v2"):]
    assert "    progress: pre_switch ran 4.2 s, at command 2 of 2: python manage.py migrate" in block[:6], lines
    assert sum(1 for line in lines if line.strip().startswith("progress:")) == 1, lines
