# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Redaction: every value of the env file is treated as a secret in what the engine prints,
returns and records."""

from __future__ import annotations

import re
import typing as t


# Env values shorter than this are not redacted from container output (see redact()).
REDACT_MIN_LENGTH = 4


def redact(text: str, env: t.Sequence[str]) -> str:
    """`text` with every env value (KEY=value entries, values of REDACT_MIN_LENGTH characters or
    more) replaced by [redacted KEY]. The engine cannot tell secrets from plain settings, so every
    value of the env file is treated as a secret; one pass, longest value first, so a marker is
    never redacted again and a value holding another is replaced whole."""
    names: dict[str, str] = {}
    for item in env:
        key, _sep, value = item.partition("=")
        if len(value) >= REDACT_MIN_LENGTH:
            names.setdefault(value, key)
    if not names or not text:
        return text
    pattern = re.compile("|".join(re.escape(value) for value in sorted(names, key=len, reverse=True)))
    return pattern.sub(lambda match: "[redacted %s]" % names[match.group(0)], text)


def redact_values(value: t.Any, env: t.Sequence[str]) -> t.Any:
    """`value` (a result, an audit line) with redact() applied to every text in it, at any depth."""
    if not env:
        return value
    if isinstance(value, str):
        return redact(value, env)
    if isinstance(value, dict):
        return {key: redact_values(item, env) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_values(item, env) for item in value]
    return value


# The texts of a result or an audit line that carry what an app or a failure wrote (exception
# and Docker error texts, log tails). Everything else is an identifier the engine itself made (app,
# release, image, container names, snapshot paths): never redacted, so that rollback,
# restore-database and the smoke check still match on them when an env value happens to appear in
# one (APP_NAME=shop, release v2-prod with NODE_ENV=prod...). The release an app answered with
# (X-Release) is the app's text too, redacted unless it is the release id the engine expected.
FREE_TEXT_KEYS = ("error", "pre_switch_output", "progress")


def redact_free_text(result: dict[str, t.Any], env: t.Sequence[str]) -> dict[str, t.Any]:
    """`result` with redact() applied to the texts of FREE_TEXT_KEYS (at any depth) and to an
    app-reported release that is not the expected one."""
    clean = dict(result, **{key: redact_values(result[key], env) for key in FREE_TEXT_KEYS if key in result})
    expected = result.get("release")
    if isinstance(clean.get("health_release"), str) and clean["health_release"] != expected:
        clean["health_release"] = redact(clean["health_release"], env)
    verified = clean.get("proxy_verified")
    if isinstance(verified, dict) and isinstance(verified.get("release"), str) and verified["release"] != expected:
        clean["proxy_verified"] = dict(verified, release=redact(verified["release"], env))
    return clean


def tail(text: str, lines: int = 50) -> str:
    return "\n".join(text.rstrip().split("\n")[-lines:])
