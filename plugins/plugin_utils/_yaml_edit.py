# -*- coding: utf-8 -*-

# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Private to greenlight.deploy (leading underscore): no compatibility promise outside the collection.

"""Textual edit of the top-level keys of a flat YAML mapping (a decrypted vault file).

Only the value of each key set is replaced in the text, so every other line -- comments, blank
lines, order, quoting of other values -- stays byte for byte as it was. The result is parsed
again and must equal the old mapping with exactly the requested changes; otherwise nothing is
returned and the caller writes nothing. Values are never put into error messages.
"""

from __future__ import annotations

import json
import re
import typing as t

import yaml

KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: no trailing newline


class YamlEditError(Exception):
    """The file cannot be edited safely; the message names keys, never values."""


class _Loader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """SafeLoader that accepts Ansible's local tags (!unsafe, !vault, ...) as plain values."""


def _construct_tagged(loader: _Loader, _suffix: str, node: yaml.Node) -> t.Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


_Loader.add_multi_constructor("!", _construct_tagged)


def load_mapping(text: str) -> dict[str, t.Any]:
    """The top-level mapping of `text` ({} for an empty document)."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = " at line %d" % (mark.line + 1) if mark is not None else ""
        raise YamlEditError("the decrypted file is not valid YAML%s" % where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise YamlEditError("the decrypted file is not a YAML mapping of variable names to values")
    return data


def quote(value: str) -> str:
    """A double-quoted YAML scalar for `value` (JSON string syntax is a subset of it)."""
    return json.dumps(value, ensure_ascii=False)


def _top_level_pairs(text: str) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
    try:
        root = yaml.compose(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        raise YamlEditError("the decrypted file is not valid YAML") from None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == "tag:yaml.org,2002:null"):
        return []  # an empty document (perhaps only "---" and comments)
    if not isinstance(root, yaml.MappingNode):
        raise YamlEditError("the decrypted file is not a YAML mapping of variable names to values")
    pairs = []
    for key_node, value_node in root.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise YamlEditError("the decrypted file has a top-level key that is not a plain name")
        pairs.append((key_node, value_node))
    return pairs


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """Index just past the line break of the line holding `index` (or the end of the text)."""
    end = text.find("\n", index)
    return len(text) if end < 0 else end + 1


def update_text(text: str, set_values: t.Optional[dict[str, str]] = None,
                copy: t.Optional[dict[str, str]] = None,
                remove: t.Optional[list[str]] = None) -> tuple[str, dict[str, list[str]]]:
    """Apply the changes to `text`; return (new text, report of key names).

    set_values: key -> new string value (added at the end when the key is not there).
    copy: destination key -> source key; the destination gets the source's value from BEFORE
    this update (so {"fallbacks": "key"} together with set_values {"key": new} moves the old key
    into fallbacks). remove: keys deleted with their whole line(s) when present.
    Report: changed (values replaced by a different one), added, removed, unchanged.
    """
    set_values = dict(set_values or {})
    copy = dict(copy or {})
    remove = list(remove or [])

    for name in list(set_values) + list(copy) + list(copy.values()) + remove:
        if not isinstance(name, str) or not KEY_PATTERN.match(name):
            raise YamlEditError("invalid variable name %r (letters, digits and '_', not starting with a digit)"
                                % (name,))
    both = (set(set_values) & set(copy)) | ((set(set_values) | set(copy)) & set(remove))
    if both:
        raise YamlEditError("keys given more than once (set, copy, remove): %s" % ", ".join(sorted(both)))
    for name, value in set_values.items():
        if not isinstance(value, str):
            raise YamlEditError("the value for %s is not a string" % name)

    old = load_mapping(text)
    pairs = _top_level_pairs(text)
    seen: dict[str, int] = {}
    for key_node, _value in pairs:
        seen[key_node.value] = seen.get(key_node.value, 0) + 1
    touched = set(set_values) | set(copy) | set(remove) | set(copy.values())
    duplicated = sorted(name for name in touched if seen.get(name, 0) > 1)
    if duplicated:
        raise YamlEditError("keys defined more than once in the file: %s" % ", ".join(duplicated))
    missing_sources = sorted(source for source in copy.values() if source not in old)
    if missing_sources:
        raise YamlEditError("keys to copy from are not in the file: %s" % ", ".join(missing_sources))
    for source in copy.values():
        if not isinstance(old[source], str):
            raise YamlEditError("the value of %s (to copy from) is not a string" % source)

    wanted: dict[str, str] = dict(set_values)
    wanted.update({dest: old[source] for dest, source in copy.items()})

    report: dict[str, list[str]] = {"changed": [], "added": [], "removed": [], "unchanged": []}
    # (start, end, replacement) edits on the original text, applied back to front.
    edits: list[tuple[int, int, str]] = []
    for key_node, value_node in pairs:
        name = key_node.value
        if name in wanted:
            if old[name] == wanted[name] and isinstance(old[name], str):
                report["unchanged"].append(name)
                continue
            start, end = value_node.start_mark.index, value_node.end_mark.index
            replacement = quote(wanted[name])
            if isinstance(value_node, yaml.ScalarNode) and value_node.style in ("|", ">"):
                # A block scalar runs to the start of the next line: keep one line break.
                replacement += "\n"
            elif isinstance(value_node, (yaml.MappingNode, yaml.SequenceNode)) and value_node.flow_style is False:
                # A block collection starts on the next line(s): put the scalar on the key's line.
                start = text.index(":", key_node.end_mark.index) + 1
                replacement = replacement + "\n"
            if start > 0 and text[start - 1] not in " \t\n":
                replacement = " " + replacement
            edits.append((start, end, replacement))
            report["changed"].append(name)
        elif name in remove:
            start = _line_start(text, key_node.start_mark.index)
            end_index = value_node.end_mark.index
            end = end_index if end_index > 0 and text[end_index - 1] == "\n" else _line_end(text, end_index)
            edits.append((start, end, ""))
            report["removed"].append(name)

    new_text = text
    for start, end, replacement in sorted(edits, reverse=True):
        new_text = new_text[:start] + replacement + new_text[end:]

    additions = [name for name in wanted if name not in old]
    if additions:
        if new_text and not new_text.endswith("\n"):
            new_text += "\n"
        for name in additions:
            new_text += "%s: %s\n" % (name, quote(wanted[name]))
            report["added"].append(name)

    expected = dict(old)
    expected.update(wanted)
    for name in remove:
        expected.pop(name, None)
    try:
        result = load_mapping(new_text)
    except YamlEditError:
        result = None
    if result != expected:
        raise YamlEditError("rewriting %s would change more than these keys (unusual YAML around them); "
                            "edit the file with ansible-vault edit instead"
                            % ", ".join(sorted(set(wanted) | set(remove))))
    return new_text, report
