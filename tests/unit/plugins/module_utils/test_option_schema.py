"""The swap engine's options are defined once (plugins/module_utils/_engine/schema.py); every other
place that states them is checked against that table here, so none of them can drift:
the module's argument_spec and DOCUMENTATION, the engine's options dataclass and validate_options,
the deploy settings (the mapping of role variables to engine options, their argument_specs and
defaults) and the options table of docs/container_swap.md."""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing as t
from pathlib import Path

import pytest
import yaml

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import schema
from ansible_collections.greenlight.deploy.plugins.modules import container_swap

REPO = Path(__file__).resolve().parents[4]
ENGINE = "ansible_collections.greenlight.deploy.plugins.module_utils."


def engine_options_module() -> t.Any:
    """Where SwapOptions and validate_options live."""
    return importlib.import_module(ENGINE + "_engine.options")


def same(left: t.Any, right: t.Any) -> bool:
    """Equal values of the same kind (60 == 60.0, but True != 1 and "1" != 1)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    return type(left) is type(right) and left == right


# ---------------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------------
def test_schema_is_well_formed() -> None:
    names = [option.name for option in schema.OPTIONS + schema.ENGINE_ONLY]
    assert len(names) == len(set(names))
    for option in schema.OPTIONS + schema.ENGINE_ONLY:
        assert option.type in schema.TYPES, option
        assert (option.elements is not None) == (option.type == "list"), option
        assert option.description and "\n" not in option.description, option
        assert not (option.required and option.default is not None), option
        if option.choices:
            assert option.default is None or option.default in option.choices, option
    for option_name, _value, required in schema.REQUIRED_IF:
        assert option_name in schema.BY_NAME and set(required) <= set(schema.BY_NAME), required


def test_argument_spec_is_built_from_the_schema_and_never_shares_defaults() -> None:
    spec = schema.argument_spec()
    assert list(spec) == [option.name for option in schema.OPTIONS]
    spec["mounts"]["default"].append("/x:/y")
    spec["services"]["options"]["name"]["required"] = False
    assert schema.argument_spec()["mounts"]["default"] == []
    assert schema.argument_spec()["services"]["options"]["name"]["required"] is True
    # container_swap.py takes its argument_spec and required_if from the schema, not from a copy.
    assert container_swap.argument_spec is schema.argument_spec
    assert container_swap.required_if is schema.required_if


def _check_documented(documented: dict[str, t.Any], options: t.Sequence[schema.Option], where: str) -> list[str]:
    problems = []
    if set(documented) != {o.name for o in options}:
        problems.append("%s: documented %s, schema %s" % (where, sorted(documented), sorted(o.name for o in options)))
    for option in options:
        doc = documented.get(option.name)
        if doc is None:
            continue
        checks = {
            "type": (doc.get("type", "str"), option.type),
            "elements": (doc.get("elements"), option.elements),
            "default": (doc.get("default"), option.default),
            "required": (doc.get("required", False), option.required),
            "choices": (tuple(doc["choices"]) if "choices" in doc else None, option.choices),
            "no_log": (doc.get("no_log", False), option.no_log),
        }
        for key, (have, want) in checks.items():
            if not same(have, want):
                problems.append("%s.%s: %s is %r in the documentation, %r in the schema"
                                % (where, option.name, key, have, want))
        if option.suboptions or "suboptions" in doc:
            problems += _check_documented(doc.get("suboptions", {}), option.suboptions, where + "." + option.name)
    return problems


def test_module_documentation_states_the_schema() -> None:
    documentation = yaml.safe_load(container_swap.DOCUMENTATION)
    assert _check_documented(documentation["options"], schema.OPTIONS, "options") == []


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------
PYTHON_TYPES = {"str": "str", "path": "str", "int": "int", "float": "float", "bool": "bool", "list": "list",
                "dict": "dict", "raw": ""}


def _field_default(field: dataclasses.Field) -> t.Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _check_dataclass(cls: type, options: t.Sequence[schema.Option]) -> list[str]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = []
    if list(fields) != [o.name for o in options]:
        problems.append("%s fields %s, schema %s" % (cls.__name__, list(fields), [o.name for o in options]))
    for option in options:
        field = fields.get(option.name)
        if field is None:
            continue
        if not same(_field_default(field), option.default):
            problems.append("%s.%s default %r, schema %r" % (cls.__name__, option.name, _field_default(field),
                                                             option.default))
        annotation = str(field.type)
        if PYTHON_TYPES[option.type] not in annotation:
            problems.append("%s.%s is %s, schema type %s" % (cls.__name__, option.name, annotation, option.type))
        if option.default is None and not option.required and not ("Optional" in annotation or "None" in annotation):
            problems.append("%s.%s defaults to None but is typed %s" % (cls.__name__, option.name, annotation))
    return problems


def test_engine_options_dataclass_matches_the_schema() -> None:
    engine = engine_options_module()
    assert _check_dataclass(engine.SwapOptions, schema.OPTIONS + schema.ENGINE_ONLY) == []
    assert _check_dataclass(engine.ServiceSpec, schema.BY_NAME["services"].suboptions) == []


def _minimal(**values: t.Any) -> dict[str, t.Any]:
    options = {"app_name": "todo", "image": "greenlight/todo:v2"}
    options.update(values)
    return {k: v for k, v in options.items() if v is not None}


def test_engine_validation_accepts_the_schema_defaults_and_every_choice_and_refuses_others() -> None:
    engine = engine_options_module()
    engine.options_from_dict(_minimal())  # every schema default is valid
    defaults = {o.name: o.default for o in schema.OPTIONS if o.default is not None}
    engine.options_from_dict(_minimal(**defaults))
    for option in schema.OPTIONS:
        if not option.choices:
            continue
        for choice in option.choices:
            # A mode gets image only when it needs one (rollback, restore, recreate refuse it),
            # and whatever else REQUIRED_IF asks of it.
            needed = {name for name_, value, required in schema.REQUIRED_IF
                      if name_ == option.name and value == choice for name in required}
            image = "greenlight/todo:v2" if option.name != "mode" or "image" in needed else None
            extra = {name: REQUIRED_VALUES[name] for name in needed if name != "image"}
            engine.options_from_dict(_minimal(image=image, **dict(extra, **{option.name: choice})))
        with pytest.raises(engine.OptionsError, match=option.name):
            engine.options_from_dict(_minimal(**{option.name: "not-a-choice"}))
    for option in schema.OPTIONS:
        if option.required:
            with pytest.raises(engine.OptionsError, match=option.name):
                engine.options_from_dict({k: v for k, v in _minimal().items() if k != option.name})
    for option_name, value, required in schema.REQUIRED_IF:
        for name in required:
            with pytest.raises(engine.OptionsError, match=name):
                engine.options_from_dict({k: v for k, v in _minimal(**{option_name: value}).items() if k != name})


# A valid value of each option some REQUIRED_IF rule asks for (the test above fills them in).
REQUIRED_VALUES = {"sqlite_path": "/opt/todo/data/db.sqlite3"}


# ---------------------------------------------------------------------------------------------
# The deploy settings (role variables) that feed the options
# ---------------------------------------------------------------------------------------------
def _load(path: Path) -> dict[str, t.Any]:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def settings_mapping() -> tuple[Path, dict[str, str]]:
    """The role variable holding the mapping of deploy settings to engine options (by content,
    so a rename of the role or the variable does not hide it)."""
    found = []
    for path in sorted(REPO.glob("roles/*/vars/main.yml")) + sorted(REPO.glob("roles/*/defaults/main.yml")):
        for value in _load(path).values():
            if isinstance(value, dict) and {"app_name", "health_path", "upstream_file"} <= set(value):
                found.append((path, value))
    assert len(found) == 1, [str(p) for p, _v in found]
    return found[0]


def role_declarations() -> dict[str, tuple[Path, dict[str, t.Any], t.Any]]:
    """Every role variable declared in a meta/argument_specs.yml: (role, its spec, its default in
    defaults/main.yml or None)."""
    declared = {}
    for specs in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        role = specs.parent.parent
        defaults = _load(role / "defaults" / "main.yml")
        for entry in (_load(specs).get("argument_specs") or {}).values():
            for name, spec in (entry.get("options") or {}).items():
                declared[name] = (role, spec, defaults.get(name))
    return declared


# Role defaults that differ from the engine's on purpose (the roles deploy the Django example).
ROLE_DEFAULTS_BY_DESIGN = {"deploy_script_pre_switch_commands": ["python manage.py migrate --noinput"]}
CONVERSIONS = {"int": "| int", "float": "| float", "bool": "| bool"}


def test_deploy_settings_feed_the_options_the_schema_names() -> None:
    path, mapping = settings_mapping()
    fed = {o.name: o for o in schema.OPTIONS if o.setting}
    assert set(mapping) == set(fed), (str(path), sorted(set(mapping) ^ set(fed)))
    problems = []
    for name, expression in mapping.items():
        option = fed[name]
        if not re.search(r"(?<![\w.])%s\b" % re.escape(option.setting), str(expression)):
            problems.append("%s: %s is fed by %r, the schema says %s" % (path, name, expression, option.setting))
        if option.type in CONVERSIONS and CONVERSIONS[option.type] not in str(expression):
            problems.append("%s: %s (%s) is not converted with %s" % (path, name, option.type,
                                                                      CONVERSIONS[option.type]))
        if option.elements == "int" and "map('int')" not in str(expression):
            problems.append("%s: %s (list of int) is not converted with map('int')" % (path, name))
    assert problems == []


def test_deploy_settings_argument_specs_and_defaults_match_the_options_they_feed() -> None:
    declared = role_declarations()
    problems = []
    for option in schema.OPTIONS:
        if not option.setting:
            continue
        if option.setting not in declared:
            problems.append("%s (feeds %s) is declared in no role's meta/argument_specs.yml"
                            % (option.setting, option.name))
            continue
        role, spec, default = declared[option.setting]
        where = "%s/meta/argument_specs.yml %s" % (role.name, option.setting)
        kind = spec.get("type", "str")
        # A path may be declared str in a role ("" turns the step off there; the mapping sends None).
        if kind != option.type and not {kind, option.type} <= {"str", "path"}:
            problems.append("%s: type %s, the option %s is %s" % (where, kind, option.name, option.type))
        if spec.get("elements") != option.elements:
            problems.append("%s: elements %s, the option %s has %s" % (where, spec.get("elements"), option.name,
                                                                      option.elements))
        if (tuple(spec["choices"]) if "choices" in spec else None) != option.choices:
            problems.append("%s: choices %s, the option %s has %s" % (where, spec.get("choices"), option.name,
                                                                     option.choices))
        if default is None or "{{" in str(default):
            continue  # no literal default: the argument spec describes a derived one
        if not same(spec.get("default"), default):
            problems.append("%s: default %r, defaults/main.yml has %r" % (where, spec.get("default"), default))
        wanted = ROLE_DEFAULTS_BY_DESIGN.get(option.setting, option.default)
        if wanted is not None and not same(default, wanted):
            problems.append("%s: default %r, the engine's default of %s is %r"
                            % (where, default, option.name, wanted))
    assert problems == []


# ---------------------------------------------------------------------------------------------
# docs/container_swap.md
# ---------------------------------------------------------------------------------------------
def render(value: t.Any) -> str:
    """A default as the docs write it: true, 60, 0.25, [8001, 8002], {}."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join("%s: %s" % (k, render(v)) for k, v in value.items()) + "}"
    return str(value)


def docs_options_table() -> dict[str, str]:
    """Option -> its default cell, from the table under '## Options' in docs/container_swap.md."""
    text = (REPO / "docs" / "container_swap.md").read_text()
    section = text.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z_]+)`", cells[0])
        defaults = cells[1].split(" / ") if len(names) > 1 else [cells[1]]
        assert len(defaults) == len(names), line
        for name, default in zip(names, defaults):
            assert name not in rows, "%s is in the table twice" % name
            rows[name] = default
    return rows


def test_docs_options_table_states_the_schema() -> None:
    rows = docs_options_table()
    options = schema.OPTIONS + schema.ENGINE_ONLY
    assert list(rows) == [o.name for o in options]
    problems = []
    for option in options:
        cell = rows[option.name]
        if option.required != (cell == "required"):
            problems.append("%s: default cell %r, required=%s in the schema" % (option.name, cell, option.required))
        if option.default is not None and "`%s`" % render(option.default) not in cell:
            problems.append("%s: default cell %r, the schema's default is `%s`"
                            % (option.name, cell, render(option.default)))
        if option.default is None and re.fullmatch(r"`[^`]*`( s)?", cell) and "<" not in cell:
            problems.append("%s: default cell %r, the schema has no default" % (option.name, cell))
    assert problems == []
