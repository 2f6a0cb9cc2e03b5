"""container_swap_info returns exactly what state.status (the engine's one reader) builds, and its
RETURN documents each of those keys and no other; its options are container_swap's where shared."""

from __future__ import annotations

import yaml

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import schema, state
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import options_from_dict
from ansible_collections.greenlight.deploy.plugins.modules import container_swap_info


class NoContainers:
    def list_containers(self, labels=None, all=True):
        return []


def test_return_documents_every_status_key_and_no_other(tmp_path) -> None:
    opts = options_from_dict({"app_name": "todo", "app_dir": str(tmp_path), "mode": "rollback",
                              "upstream_file": str(tmp_path / "upstream.conf")})
    keys = set(state.status(opts, "web1", docker=NoContainers()))
    documented = set(yaml.safe_load(container_swap_info.RETURN))
    assert documented == keys


def test_options_match_the_documentation_and_the_shared_schema() -> None:
    documented = yaml.safe_load(container_swap_info.DOCUMENTATION)["options"]
    spec = container_swap_info.argument_spec()
    assert set(documented) == set(spec)
    for name, entry in spec.items():
        assert documented[name]["type"] == entry["type"], name
        assert documented[name].get("default") == entry.get("default"), name
        assert bool(documented[name].get("required")) == bool(entry.get("required")), name
    for name in container_swap_info.SHARED:
        assert spec[name] == schema.BY_NAME[name].spec()


def test_condition_order() -> None:
    failed = {"result": "failed"}
    assert state.condition({"release": "v1"}, {"pid": 1}, failed) == "locked"
    assert state.condition({"release": "v1"}, None, failed) == "failed"
    # A finished deploy's background stop of its old release is not a deploy in progress.
    assert state.condition({"release": "v1"}, {"pid": 1, "phase": "stop_old"}, {"result": "ok"}) == "live"
    assert state.condition({"release": "v1"}, None, {"result": "ok"}) == "live"
    assert state.condition(None, None, None) == "none"
