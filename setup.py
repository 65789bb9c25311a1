"""Build: the data plane's hot path compiled to C with mypyc, where a C compiler is at hand.

Everything else about the package is in pyproject.toml. The modules in `COMPILED` (rules/_build.py)
are compiled with mypyc (part of mypy, which type-checks this code base strictly anyway) into C
extension modules that sit beside their sources; Python imports them in place of the .py files. They
are the same code, about 40 % less CPU per proxied request (docs/performance.md).

    CONTAINMENT_COMPILE=0 pip install -e .     # pure Python: no compiler needed, nothing built

Without a C compiler the build falls back to pure Python by itself (the extensions are optional). The
build writes rules/_compiled.json, the sha256 of each compiled source: when a source no longer matches
its build, the package imports the sources instead (rules/_build.py), so an edit always takes effect.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "rules"))
from _build import COMPILED, MANIFEST, digest, source  # noqa: E402  (rules/_build.py, not the package)

SOURCES = [str(source(name, Path())) for name in COMPILED]  # relative, as mypycify takes them


def extensions() -> list[object]:
    (ROOT / MANIFEST).unlink(missing_ok=True)  # until a build succeeds, no build is current
    if os.environ.get("CONTAINMENT_COMPILE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # mypy not in the build environment: pure Python
        return []
    try:
        modules = mypycify(SOURCES, opt_level="3", debug_level="0")
    except (Exception, SystemExit) as exc:  # mypyc type-checks first; say why, and stay pure Python
        print(f"containment: mypyc could not compile the request path ({exc!r}); installing pure Python")
        return []
    for module in modules:
        module.optional = True  # no C compiler: warn and install the pure-Python package
    return modules


class BuildRecorded(build_ext):
    """Records the sources' digests once every extension is built (in the tree, and in the wheel). A
    build that failed records nothing: extension modules found without a record are not used."""

    failed = False

    def build_extension(self, ext: object) -> None:
        try:
            super().build_extension(ext)
        except Exception:
            self.failed = True
            raise

    def run(self) -> None:
        super().run()
        if self.failed or not self.extensions:
            return
        digests = {name: digest(source(name, ROOT)) for name in COMPILED}
        record = json.dumps(digests, indent=1, sort_keys=True) + "\n"
        for base in {ROOT, Path(self.build_lib).resolve()}:
            (base / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
            (base / MANIFEST).write_text(record)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildRecorded})
