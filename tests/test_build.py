"""The mypyc build (setup.py, rules/_build.py): in use where it was built, never used once stale."""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rules._build import COMPILED, MANIFEST, ROOT, compiled, source, stale

PURE = os.environ.get("CONTAINMENT_PURE_PYTHON", "") not in ("", "0")
BUILT = any((ROOT / "gateway").glob("server.*.so"))  # a build that compiled (not just one that tried)


def where(*modules: str, cwd: Path = ROOT, **env: str) -> tuple[list[str], str]:
    """The files `modules` are imported from in a fresh interpreter, and what it printed on stderr."""
    code = f"import importlib; print(*(importlib.import_module(m).__file__ for m in {modules!r}))"
    environment = {key: value for key, value in os.environ.items() if key != "CONTAINMENT_PURE_PYTHON"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**environment, "PYTHONPATH": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split(), done.stderr


def test_every_compiled_module_has_its_source() -> None:
    for name in COMPILED:
        assert source(name).is_file(), name


@pytest.mark.skipif(PURE or not BUILT, reason="checks the compiled build (make install builds it)")
def test_the_build_is_in_use_and_current() -> None:
    assert stale() == []
    assert compiled()
    files, _ = where("gateway.server", "rules.match", "gateway.mock_upstream")
    assert [Path(file).suffix for file in files] == [".so", ".so", ".py"]  # mock_upstream is not compiled


@pytest.mark.skipif(PURE, reason="the compiled run checks that a compiler made a build")
def test_a_machine_with_a_c_compiler_gets_the_compiled_build() -> None:
    if shutil.which("cc") is None or os.environ.get("CONTAINMENT_COMPILE") == "0":
        pytest.skip("no C compiler here, or the build was asked to stay pure Python")
    assert BUILT and compiled(), "setup.py did not compile the request path (see the pip install output)"


def test_the_pure_python_switch_imports_every_source() -> None:
    files, _ = where(*COMPILED, CONTAINMENT_PURE_PYTHON="1")
    assert len(files) == len(COMPILED) and all(file.endswith(".py") for file in files)


def test_a_changed_source_is_detected(tmp_path: Path) -> None:
    source = tmp_path / "gateway" / "server.py"
    source.parent.mkdir()
    source.write_text("x = 1\n")
    (tmp_path / "rules").mkdir()
    digest = hashlib.sha256(b"x = 1\n").hexdigest()
    (tmp_path / MANIFEST).write_text(json.dumps({"gateway.server": digest, "gateway.gone": digest}))
    assert stale(tmp_path) == ["gateway.gone"]  # a source that is missing counts as changed
    source.write_text("x = 2\n")
    assert stale(tmp_path) == ["gateway.server", "gateway.gone"]
    assert stale(tmp_path / "nowhere") == []  # no build: nothing is stale


def test_extension_modules_without_a_record_are_stale(tmp_path: Path) -> None:
    """A build that failed or was skipped after an earlier one leaves the earlier modules, unrecorded."""
    (tmp_path / "gateway").mkdir()
    assert stale(tmp_path) == []
    (tmp_path / "gateway" / f"server{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    assert stale(tmp_path) == list(COMPILED)


@pytest.mark.skipif(PURE or not BUILT, reason="needs the compiled build")
def test_a_stale_build_is_not_used(tmp_path: Path) -> None:
    for package in ("gateway", "rules"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    for shared in ROOT.glob("*__mypyc*.so"):
        shutil.copy(shared, tmp_path)
    files, _ = where("gateway.server", "rules.match", cwd=tmp_path)
    assert all(file.endswith(".so") for file in files)  # the copy is current
    with (tmp_path / "rules" / "match.py").open("a") as source:
        source.write("\n# an edit after the build\n")
    files, warning = where("gateway.server", "rules.match", cwd=tmp_path)
    assert all(file.endswith(".py") for file in files)  # every compiled module, not just the edited one
    assert "the mypyc build is out of date (rules.match changed since)" in warning


def test_the_build_environment_has_every_runtime_dependency() -> None:
    """mypyc type-checks what it compiles: an isolated build needs what the compiled modules import."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(project["project"]["dependencies"]) <= set(project["build-system"]["requires"])
