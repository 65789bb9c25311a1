"""Connecting to Redis for a fleet: standalone (`redis://`, `rediss://`, `unix://`) or Sentinel
(`redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]`), every call bounded by a
short timeout and never retried by the client (the callers decide what a failure means)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

SENTINEL_SCHEME = "redis+sentinel"


class RedisUrlError(ValueError):
    pass


def connect(url: str, *, timeout: float) -> redis.Redis:
    options = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    parts = urlsplit(url)
    if parts.scheme == SENTINEL_SCHEME:
        hosts = []
        for item in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise RedisUrlError(f"sentinel address {item!r} must be HOST:PORT")
            hosts.append((host, int(port)))
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise RedisUrlError("a Sentinel URL needs the service name: redis+sentinel://host:port/SERVICE")
        password = unquote(parts.password) if parts.password else None
        db = int(path[1]) if len(path) > 1 and path[1].isdigit() else 0
        sentinel = Sentinel(hosts, sentinel_kwargs={"socket_timeout": timeout}, **options)
        return sentinel.master_for(path[0], password=password, db=db)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise RedisUrlError(f"unsupported Redis URL scheme {parts.scheme!r} (redis, rediss, unix, redis+sentinel)")
    client: redis.Redis = redis.from_url(url, **options)
    return client
