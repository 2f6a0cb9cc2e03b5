"""Tar streams shaped like Docker's archive GET, for the static-files tests."""

from __future__ import annotations

import io
import tarfile
import typing as t


def make_tar(entries: t.Sequence[tuple[str, t.Union[None, bytes, tuple]]]) -> io.BytesIO:
    """(name, None) is a directory, (name, (target,)) a symbolic link, (name, bytes) a file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
            elif isinstance(data, tuple):
                info.type = tarfile.SYMTYPE
                info.linkname = data[0]
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer
