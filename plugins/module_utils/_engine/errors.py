# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The engine's exceptions (the bottom layer: imports nothing of the engine)."""

from __future__ import annotations

import typing as t


class SwapError(Exception):
    """A swap failed; `result` holds the partial result (also written to releases.jsonl)."""

    def __init__(self, message: str, result: dict[str, t.Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


class OptionsError(SwapError, ValueError):
    """The options are invalid; nothing was touched."""


class LockTimeout(SwapError):
    """Another deploy holds the lock."""


class UnsafePathError(SwapError, OSError):
    """A path the engine would open is a symbolic link, a hard link, not a regular file, or owned by
    a stranger: refused, because another user (the app, the deploy user) may have planted it to make
    root read or write a file it names. An OSError too, so every file error handler sees it."""


class ProxyError(Exception):
    """The proxy could not be switched or verified."""


class ProxyReloadError(ProxyError):
    """The test passed, the reload failed. `restored`: the upstream file holds its previous
    content again; `reloaded`: nginx was then reloaded successfully with the file as it is now;
    `file_port`: the port the file names now. When `uncertain`, nginx may be routing to either
    port (a reload command that failed may still have signalled nginx), so the caller must stop
    or remove neither release."""

    def __init__(self, message: str, restored: bool, reloaded: bool, file_port: int | None) -> None:
        super().__init__(message)
        self.restored = restored
        self.reloaded = reloaded
        self.file_port = file_port

    @property
    def uncertain(self) -> bool:
        return not (self.restored and self.reloaded)
