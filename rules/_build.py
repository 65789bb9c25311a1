"""Which modules are compiled with mypyc (setup.py), and the guard that keeps a stale build from running.

The compiled extension modules sit beside their sources, and Python prefers an extension module to a
source file of the same name. A source edited after the build would then be silently ignored. So the
build records the sha256 of each source it compiled (rules/_compiled.json); on import, when any of
them no longer matches, or CONTAINMENT_PURE_PYTHON=1 is set, every compiled module is imported from
its source instead (all of them: compiled modules call each other directly, so they cannot be mixed).
`make install` rebuilds when a compiled source changes.

This file is read by setup.py without importing the package: it must import only the standard library.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# The request path: what every proxied request and every streamed event runs through.
COMPILED = (
    "gateway.body",
    "gateway.context",
    "gateway.filters.access",
    "gateway.filters.base",
    "gateway.filters.input_scan",
    "gateway.filters.kill_switch",
    "gateway.filters.output_scan",
    "gateway.filters.rate_limit",
    "gateway.filters.scope",
    "gateway.formats",
    "gateway.handler",
    "gateway.json_escapes",
    "gateway.metrics",
    "gateway.output_formats",
    "gateway.paths",
    "gateway.proxy",
    "gateway.ratelimit",
    "gateway.refusals",
    "gateway.routing",
    "gateway.server",
    "gateway.sse",
    "gateway.telemetry",
    "gateway.upstream",
    "gateway.verdict",
    "rules.alerts",
    "rules.compile",
    "rules.literal_index",
    "rules.match",
    "rules.normalize",
    "rules.regex_prefilter",
    "rules.stream_scan",
)
MANIFEST = "rules/_compiled.json"  # relative to the project root
ROOT = Path(__file__).resolve().parent.parent


def source(name: str, root: Path = ROOT) -> Path:
    """The source file of module `name` (`gateway.server` → <root>/gateway/server.py)."""
    return root.joinpath(*name.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    """What the build records of a source, and what `stale` compares."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Sources(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' .py files, ahead of the extension modules beside them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, source(fullname))


def _extension_present(root: Path) -> bool:
    stem = root / "gateway" / "server"
    return any(stem.with_name(stem.name + suffix).exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def stale(root: Path = ROOT) -> list[str]:
    """The compiled modules whose source differs from what was compiled. Extension modules without the
    build's record (a build that failed, or was skipped, after an earlier one) count as all stale."""
    try:
        built = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return list(COMPILED) if _extension_present(root) else []
    changed = []
    for name, recorded in built.items():
        try:
            if digest(source(name, root)) != recorded:
                changed.append(name)
        except OSError:
            changed.append(name)
    return changed


def compiled() -> bool:
    """Whether the compiled modules are the ones in use (checked on the first of them)."""
    module = sys.modules.get("gateway.server") or importlib.import_module("gateway.server")
    return not (module.__file__ or "").endswith(".py")


def guard() -> None:
    """Install the source finder when the build must not be used. Idempotent."""
    if any(isinstance(finder, _Sources) for finder in sys.meta_path):
        return
    if os.environ.get("CONTAINMENT_PURE_PYTHON", "") not in ("", "0"):
        sys.meta_path.insert(0, _Sources())
        return
    changed = stale()
    if changed:
        print(
            f"containment: the mypyc build is out of date ({', '.join(changed[:3])}{' …' if len(changed) > 3 else ''}"
            " changed since); running the pure-Python sources (`make install` recompiles)",
            file=sys.stderr,
        )
        sys.meta_path.insert(0, _Sources())
