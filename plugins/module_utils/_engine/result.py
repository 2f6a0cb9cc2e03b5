# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The result of a run, built in one place: phases add facts with named methods, :meth:`Result.final`
adds what every caller needs (``switched``, ``live_release``, ``outcome``) on success and failure."""

from __future__ import annotations

import typing as t

from .labels import name

# outcome.state values (docs/container_swap.md, RETURN of container_swap).
STATES = ("deployed", "unchanged", "rolled-back", "would-deploy", "would-pull", "failed", "recreated", "prepared",
          "restored", "would-recreate", "would-restore")
OUTCOME_KEYS = ("state", "action", "phase", "release", "previous", "live", "image", "digest", "phases", "switched",
                "message", "progress")


class Result:
    """The result dict of one run (what container_swap returns and releases.jsonl records)."""

    def __init__(self, actor: dict[str, t.Any]) -> None:
        self.data: dict[str, t.Any] = {"changed": False, "rolled_back": False, "health_attempts": 0, "actor": actor}

    # -- reading ---------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> t.Any:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, default: t.Any = None) -> t.Any:
        return self.data.get(key, default)

    # -- facts -----------------------------------------------------------------------------------
    def set(self, **facts: t.Any) -> None:
        self.data.update(facts)

    def from_plan(self, plan: t.Any) -> None:
        """What the plan knows: action, releases, image, and what serves when nothing changes."""
        live = plan.live
        self.data.update({
            "action": plan.action,
            "release": plan.release,
            "previous_release": plan.previous_release,
            "image": plan.image,
            "image_id": plan.image_id,
            "image_digest": plan.image_digest,
            "live_port": plan.upstream_port if live else None,
            "container_id": live["Id"] if live and not plan.web_change else None,
            "container_name": name(live) if live and not plan.web_change else None,
            "services": [name(c) for item in plan.services_plan for c in item.existing if not item.change],
        })

    def serving(self, container: t.Optional[dict[str, t.Any]], port: t.Optional[int]) -> None:
        """The web container (Docker's dict, or None) that serves on `port` at the end."""
        self.data.update({"container_id": container["Id"] if container else None,
                          "container_name": name(container) if container else None, "live_port": port})

    def uncertain(self, file_port: t.Optional[int]) -> None:
        """nginx could not be reloaded: it may route to either release; the file names file_port."""
        self.data.update({"proxy_uncertain": True, "live_port": file_port})

    def health_attempt(self) -> int:
        self.data["health_attempts"] += 1
        return self.data["health_attempts"]

    def failed(self, phase: str, error: str, changed: bool, phases: dict[str, float],
               seconds: t.Optional[float] = None) -> None:
        """The run failed in `phase` after `seconds` in it: progress says how far that phase got."""
        self.data.update({"failed_phase": phase, "error": error, "changed": changed, "phases": phases})
        progress = dict(self.data.get("progress") or {})
        if progress.get("phase") != phase:
            progress = {"phase": phase, "step": None, "started": None}
        if seconds is not None:
            progress["seconds"] = seconds
        self.data["progress"] = progress

    # -- the answer ------------------------------------------------------------------------------
    def final(self, state: str, live_release: t.Optional[str], switched: bool, message: str,
              check_mode: bool = False) -> dict[str, t.Any]:
        """The result with `switched`, `live_release` and the `outcome` record (fixed keys)."""
        data = self.data
        data["switched"] = bool(switched)
        data["live_release"] = live_release
        data["outcome"] = {
            "state": state,
            "action": data.get("action"),
            "phase": data.get("failed_phase"),
            "release": data.get("release"),
            "previous": data.get("previous_release"),
            "live": live_release,
            "image": data.get("image"),
            "digest": data.get("image_digest"),
            "phases": dict(data.get("phases") or {}),
            "switched": bool(switched),
            "message": " ".join(str(message).split())[:500],
            "progress": progress_line(data.get("progress")) if state == "failed" else None,
        }
        return data


def progress_line(progress: t.Optional[dict[str, t.Any]]) -> t.Optional[str]:
    """How far the last phase got, one line: "pre_switch ran 4.2 s, at command 1 of 1: python manage.py
    migrate" (outcome.progress of a failed run, the deploy summary shows it)."""
    if not progress or not progress.get("phase"):
        return None
    line = str(progress["phase"])
    if isinstance(progress.get("seconds"), (int, float)):
        line += " ran %.1f s" % progress["seconds"]
    if progress.get("step"):
        line += ", at %s" % progress["step"]
    return " ".join(line.split())[:300]


def success_state(data: dict[str, t.Any], check_mode: bool, mode: str = "deploy") -> str:
    """outcome.state of a swap that did not fail."""
    if not data.get("changed"):
        return "unchanged"
    if mode == "recreate":
        return "would-recreate" if check_mode else "recreated"
    if check_mode:
        return "would-deploy"
    return "rolled-back" if data.get("action") == "rollback" else "deployed"


def success_message(data: dict[str, t.Any], host: str, check_mode: bool, live: t.Optional[str],
                    mode: str = "deploy") -> str:
    """One line for humans about a run that did not fail."""
    if mode == "recreate" and data.get("changed"):
        return "%s release %s on %s with the current env file and options" % (
            "would re-create" if check_mode else "re-created", data.get("release"), host)
    if not data.get("changed"):
        return "release %s is already live on %s with this image and configuration; nothing changed" % (
            data.get("release"), host)
    if check_mode:
        return "would put release %s live on %s (%s; %s is live)" % (data.get("release"), host, data.get("action"),
                                                                     data.get("previous_release") or "nothing")
    return "release %s is live on %s (%s; previous release %s)" % (live, host, data.get("action"),
                                                                   data.get("previous_release") or "none")
