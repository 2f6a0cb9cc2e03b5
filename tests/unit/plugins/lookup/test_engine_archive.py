"""The engine archive deploy_script copies to servers: deterministic, complete, importable."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ansible.errors import AnsibleError
from ansible_collections.greenlight.deploy.plugins.lookup import engine_archive
from ansible_collections.greenlight.deploy.plugins.lookup.engine_archive import LookupModule, engine_archive_bytes


def test_the_same_engine_gives_the_same_bytes_whatever_the_file_times(tmp_path: Path) -> None:
    engine = Path(engine_archive.ENGINE_DIR)
    first = engine_archive_bytes()
    copy = tmp_path / "engine"
    copy.mkdir()
    for source in engine.glob("*.py"):
        (copy / source.name).write_bytes(source.read_bytes())  # new mtimes
    assert engine_archive_bytes(str(copy)) == first
    (copy / "drain.py").write_bytes((copy / "drain.py").read_bytes() + b"\n# changed\n")
    assert engine_archive_bytes(str(copy)) != first


def test_every_engine_file_is_in_the_package_and_nothing_else(tmp_path: Path) -> None:
    archive = tmp_path / "greenlight.zip"
    archive.write_bytes(engine_archive_bytes())
    names = zipfile.ZipFile(archive).namelist()
    assert names == sorted("greenlight/%s" % p.name for p in Path(engine_archive.ENGINE_DIR).glob("*.py"))
    assert all(info.external_attr >> 16 == 0o100644 for info in zipfile.ZipFile(archive).infolist())


def test_deploy_sh_imports_the_engine_from_the_archive_alone(tmp_path: Path) -> None:
    # What deploy.sh runs: python3 -I with only the archive added to sys.path, from /.
    archive = tmp_path / "greenlight.zip"
    archive.write_bytes(engine_archive_bytes())
    proc = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "import greenlight.cli, greenlight.swap; print(greenlight.cli.__file__)", str(archive)],
                          cwd="/", capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(archive / "greenlight" / "cli.py")


def test_an_incomplete_engine_is_refused(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text("")
    with pytest.raises(AnsibleError, match="incomplete"):
        engine_archive_bytes(str(tmp_path))


def test_the_lookup_returns_one_path_holding_those_bytes() -> None:
    [path] = LookupModule().run([])
    assert Path(path).read_bytes() == engine_archive_bytes()
    assert LookupModule().run([]) == [path]


def test_a_planted_file_under_the_archive_name_is_replaced(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(engine_archive.C, "DEFAULT_LOCAL_TMP", str(tmp_path))
    [path] = LookupModule().run([])
    Path(path).write_bytes(b"PK planted by someone else")
    assert LookupModule().run([]) == [path]
    assert Path(path).read_bytes() == engine_archive_bytes()
    assert [p.name for p in tmp_path.iterdir()] == [Path(path).name]  # no temp file left


def test_no_shared_directory_is_used_when_ansibles_is_missing(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(engine_archive.C, "DEFAULT_LOCAL_TMP", str(tmp_path / "gone"))
    with pytest.raises(AnsibleError, match="local temporary directory"):
        LookupModule().run([])
