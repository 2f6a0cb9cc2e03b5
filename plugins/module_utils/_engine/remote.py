# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""container_swap's front end on the server without Ansible's module wrapper (the fast call).

The action plugin of ``greenlight.deploy.container_swap`` runs this from the engine archive that
the role ``deploy_script`` installed (``<deploy_script_install_dir>/greenlight.zip``, the one
``deploy.sh`` imports), after checking that the archive holds byte for byte the engine of the
controller's collection (:data:`BOOT`): one ``python3`` process, the options (validated on the
controller with the module's own argument_spec) as JSON on stdin, the result as JSON on stdout.
The module shapes the same result (``swap_action``, ``diff``); the action plugin does that here.
"""

from __future__ import annotations

import json
import sys
import typing as t

from .errors import SwapError
from .swap import run_swap

# The command's Python program (python3 -I -c BOOT <archive> <sha256>): run the engine in
# <archive> only when its bytes have the controller's digest and only root or the user running
# it can change the archive and every directory above it (symlinks resolved first; a directory
# others may write to counts only with the sticky bit, like /tmp, since then they cannot rename
# or remove an entry root owns); otherwise print {"greenlight_engine": "<digest found>" |
# "missing" | "unsafe"} and change nothing (the caller then sends the module as usual). What is
# checked is what runs: the resolved path, whose every step only root can change. Reads stdin
# only after the check.
BOOT = (
    "import hashlib,json,os,sys\n"
    "p,d=sys.argv[1],sys.argv[2]\n"
    "u=(0,os.getuid())\n"
    "try:\n"
    " r=os.path.realpath(p)\n"
    " f=open(r,'rb')\n"
    " with f:\n"
    "  h=hashlib.sha256(f.read()).hexdigest()\n"
    "  s=[os.fstat(f.fileno())]\n"
    "  q=r\n"
    "  while q!=os.path.dirname(q):\n"
    "   q=os.path.dirname(q)\n"
    "   s.append(os.lstat(q))\n"
    "  for i,x in enumerate(s):\n"
    "   if x.st_uid not in u or (x.st_mode&0o022 and not(i and x.st_mode&0o1000)):h='unsafe'\n"
    "except OSError:h='missing'\n"
    "if h!=d:print(json.dumps({'greenlight_engine':h}));sys.exit(0)\n"
    "sys.path.insert(0,r)\n"
    "from greenlight.remote import main\n"
    "sys.exit(main())\n"
)


def call(request: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Run the swap of request['options']; {"result": ...} or {"failed": msg, "result": ...}."""
    try:
        return {"result": run_swap(dict(request["options"]), background_stop=True)}
    except SwapError as exc:
        return {"failed": str(exc), "result": dict(exc.result)}


def main(stdin: t.Optional[t.TextIO] = None, stdout: t.Optional[t.TextIO] = None) -> int:
    reply = call(json.load(stdin or sys.stdin))
    out = stdout or sys.stdout
    out.write(json.dumps(reply, sort_keys=True, default=str))
    out.flush()
    return 0
