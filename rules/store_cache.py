"""A fleet replica's disk cache of the newest policy it has seen (manifest with its epoch and lineage, and
the rules), so that it starts from it: while Redis is down, and when Redis has lost its data."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
from pydantic import ValidationError

from rules.model import Policy
from rules.store_file import RULES_ADAPTER, Manifest, policy_from_manifest, serialize_rules, write_atomic

log = logging.getLogger(__name__)

CACHE_MANIFEST = "cache-manifest.json"
CACHE_RULES = "cache-rules.json"


def write_cache(directory: Path, policy: Policy, manifest: Manifest) -> None:
    """Rules first (only when they changed), then the manifest by write-then-rename: the commit point."""
    previous = directory / CACHE_MANIFEST
    try:
        old = orjson.loads(previous.read_bytes()) if previous.exists() else {}
    except orjson.JSONDecodeError:
        old = {}
    same_rules = (old.get("rules_file"), old.get("epoch", "")) == (manifest.rules_file, manifest.epoch)
    if not same_rules or not (directory / CACHE_RULES).exists():
        write_atomic(directory / CACHE_RULES, serialize_rules(policy.rules))
    write_atomic(previous, manifest.model_dump_json().encode())


def load_cache(directory: Path) -> tuple[Policy, Manifest] | None:
    path = directory / CACHE_MANIFEST
    if not path.exists():
        log.info("no cached policy in %s", directory)
        return None
    try:
        manifest = Manifest.model_validate_json(path.read_bytes())
        rules = RULES_ADAPTER.validate_json((directory / CACHE_RULES).read_bytes())
    except (OSError, ValidationError) as exc:
        log.error("the policy cache in %s cannot be read (%s): starting without it", directory, exc)
        return None
    return policy_from_manifest(manifest, tuple(rules)), manifest
