"""Access restriction by key id, tenant and CIDR; client IP from the peer or trusted proxies only."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.body import client_address
from tests.conftest import Stack, StackFactory, chat


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


async def _status(stack: Stack, key: str | None = None, headers: dict[str, str] | None = None) -> int:
    sent = dict(headers or {})
    if key:
        sent["Authorization"] = f"Bearer {key}"
    response = await stack.gateway.post("/v1/chat/completions", json=chat("hi"), headers=sent)
    if response.status == 403:
        body = await response.json()
        assert body["error"]["code"] == "access_restricted"
        assert response.headers["X-Containment-Action"] == "access_restricted"
    return response.status


async def test_deny_lists(make_stack: StackFactory) -> None:
    stack = await make_stack(tenants={key_id("sk-acme"): "acme"})
    await stack.put("/v1/access", {"deny": {"keys": [key_id("sk-bad")], "tenants": ["acme"]}})
    assert await _status(stack, "sk-bad") == 403
    assert await _status(stack, "sk-acme") == 403
    assert await _status(stack, "sk-good") == 200
    assert await _status(stack) == 200
    await stack.put("/v1/access", {"deny": {"cidrs": ["127.0.0.0/8"]}})
    assert await _status(stack, "sk-good") == 403


async def test_restricted_mode_admits_only_the_allow_list(stack: Stack) -> None:
    await stack.put("/v1/access", {"restricted": True, "allow": {"keys": [key_id("sk-ir-team")]}})
    assert await _status(stack, "sk-ir-team") == 200
    assert await _status(stack, "sk-customer") == 403
    assert await _status(stack) == 403
    await stack.put("/v1/access", {"restricted": True, "allow": {"cidrs": ["127.0.0.1"]}})
    assert await _status(stack, "sk-customer") == 200
    await stack.put("/v1/access", {"restricted": False})
    assert await _status(stack, "sk-customer") == 200


async def test_deny_beats_allow(stack: Stack) -> None:
    await stack.put(
        "/v1/access", {"restricted": True, "allow": {"cidrs": ["127.0.0.1/32"]}, "deny": {"keys": [key_id("sk-x")]}}
    )
    assert await _status(stack, "sk-x") == 403
    assert await _status(stack, "sk-y") == 200


async def test_forwarded_for_is_ignored_from_untrusted_peers(stack: Stack) -> None:
    await stack.put("/v1/access", {"deny": {"cidrs": ["203.0.113.0/24"]}})
    assert await _status(stack, headers={"X-Forwarded-For": "203.0.113.9"}) == 200  # spoof ignored


async def test_forwarded_for_is_read_through_trusted_proxies(make_stack: StackFactory) -> None:
    stack = await make_stack(trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"])
    await stack.put("/v1/access", {"deny": {"cidrs": ["203.0.113.0/24"]}})
    assert await _status(stack, headers={"X-Forwarded-For": "203.0.113.9, 10.1.2.3"}) == 403
    assert await _status(stack, headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}) == 200
    assert await _status(stack, headers={"X-Forwarded-For": "198.51.100.7"}) == 200


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


@pytest.mark.parametrize(
    "peer,forwarded,expected",
    [
        ("198.51.100.1", ["1.2.3.4"], "198.51.100.1"),  # untrusted peer: header ignored
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["1.2.3.4"], "1.2.3.4"),
        ("127.0.0.1", ["6.6.6.6, 1.2.3.4, 10.0.0.2"], "1.2.3.4"),  # rightmost untrusted wins
        ("127.0.0.1", ["6.6.6.6", "1.2.3.4"], "1.2.3.4"),  # several headers read as one list
        ("127.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # all trusted: the farthest
        ("127.0.0.1", ["garbage, 10.0.0.2"], "10.0.0.2"),  # junk stops the walk
        ("127.0.0.1", ["[2001:db8::1]"], "2001:db8::1"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], expected: str) -> None:
    assert client_address(peer, forwarded, TRUSTED)[0] == expected


_V4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
_V6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))
_NETWORKS = st.one_of(
    st.builds(lambda a, n: ipaddress.ip_network(f"{a}/{n}", strict=False), _V4, st.integers(0, 32)),
    st.builds(lambda a, n: ipaddress.ip_network(f"{a}/{n}", strict=False), _V6, st.integers(0, 128)),
)


@settings(max_examples=300, deadline=None)
@given(networks=st.lists(_NETWORKS, max_size=20), addresses=st.lists(_V4 | _V6, max_size=10), data=st.data())
def test_a_network_set_answers_as_a_scan_of_its_networks_would(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    data: st.DataObject,
) -> None:
    from rules.compile import NetworkSet

    if networks:  # and addresses inside some of them, where most of the random ones fall outside all
        inside = data.draw(st.sampled_from(networks))
        addresses.append(inside.network_address + data.draw(st.integers(0, inside.num_addresses - 1)))
    found = NetworkSet(networks)
    for address in addresses:
        assert (address in found) == any(address in network for network in networks), (address, networks)
    assert None not in found and bool(found) == bool(networks)


def test_an_ipv4_mapped_peer_is_its_ipv4_address() -> None:
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; IPv4 deny lists must still match them.
    assert client_address("::ffff:10.1.2.3", [], ()) == ("::ffff:10.1.2.3", ipaddress.IPv4Address("10.1.2.3"))
