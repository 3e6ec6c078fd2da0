"""Which repository hosts the hub contacts (pure logic, with a resolver the test controls)."""

from __future__ import annotations

import pytest

from repo2docker_buildcore.contract import InvalidBuildRequest
from repo2dockerspawner.hosts import contact_addresses, curl_resolve
from repo2dockerspawner.options import RepoPolicy

pytestmark = pytest.mark.unit

DNS = {
    "github.com": ["140.82.121.4"],
    "localhost": ["127.0.0.1", "::1"],
    "rebind.example.org": ["93.184.216.34", "10.0.0.7"],
    "metadata.example.org": ["169.254.169.254"],
    "cgnat.example.org": ["100.64.1.1"],
    "v6.example.org": ["2001:4860::8888"],
    "git.corp.example": ["10.20.30.40"],
    "ula.example.org": ["fd12:3456::1"],
    # IPv6 addresses that a translator on the path delivers to an internal IPv4 address.
    "nat64.example.org": ["64:ff9b::7f00:1"],
    "nat64-local.example.org": ["64:ff9b:1::a00:7"],
    "mapped.example.org": ["::ffff:169.254.169.254"],
    "sixtofour.example.org": ["2002:a00:1::1"],
    "teredo.example.org": ["2001:0:4136:e378:8000:63bf:f5ff:fffe"],
}


async def resolve(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise OSError(f"no address for {host}")
    return DNS[host]


OPEN = RepoPolicy(schemes=("https", "http"), hosts=("*",))


@pytest.mark.parametrize(
    "url, addresses",
    [
        ("https://github.com/a/b", ["140.82.121.4"]),
        ("https://v6.example.org/a/b", ["2001:4860::8888"]),
    ],
)
async def test_public_hosts_are_contacted_at_the_addresses_checked(url, addresses):
    assert await contact_addresses(url, OPEN, resolve) == addresses


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://localhost/a", "loopback"),
        ("https://127.0.0.1/a", "loopback"),
        ("https://[::1]/a", "loopback"),
        ("https://[::ffff:127.0.0.1]/a", "loopback"),
        ("https://0.0.0.0/a", "unspecified"),
        ("https://metadata.example.org/a", "link-local"),
        ("https://[fe80::1]/a", "link-local"),
        ("https://10.1.2.3/a", "private"),
        ("https://192.168.1.1/a", "private"),
        ("https://172.20.0.1/a", "private"),
        ("https://ula.example.org/a", "unique-local"),
        ("https://cgnat.example.org/a", "non-public"),
        ("https://rebind.example.org/a", "private"),  # one internal address among public ones is enough
        ("https://nat64.example.org/a", "loopback"),
        ("https://nat64-local.example.org/a", "private"),
        ("https://mapped.example.org/a", "link-local"),
        ("https://sixtofour.example.org/a", "private"),
        ("https://teredo.example.org/a", "private"),
    ],
)
async def test_hosts_on_the_hubs_own_network_are_refused(url, reason):
    with pytest.raises(InvalidBuildRequest) as info:
        await contact_addresses(url, OPEN, resolve)
    assert "is not allowed on this hub" in str(info.value) and reason in str(info.value), str(info.value)


async def test_a_public_address_given_as_such_is_refused_by_default():
    with pytest.raises(InvalidBuildRequest, match="by its name"):
        await contact_addresses("https://140.82.121.4/a/b", OPEN, resolve)


async def test_hosts_an_admin_names_may_be_internal():
    policy = RepoPolicy(schemes=("https", "http"), hosts=("*", "git.corp.example", "*.example.org", "172.17.0.1"))
    assert await contact_addresses("https://git.corp.example/a", policy, resolve) == []  # as named: no pinning
    assert await contact_addresses("https://metadata.example.org/a", policy, resolve) == []
    assert await contact_addresses("http://172.17.0.1:18080/a.git", policy, resolve) == []
    with pytest.raises(InvalidBuildRequest):
        await contact_addresses("https://localhost/a", policy, resolve)  # '*' names nobody


@pytest.mark.parametrize("catch_all", ["*", "*.*", "?*", "*.org", "**", "[a-z]*"])
async def test_patterns_that_match_nearly_every_host_name_none(catch_all):
    policy = RepoPolicy(schemes=("https",), hosts=(catch_all,))
    for url in ("https://git.corp.example/a", "https://metadata.example.org/a"):
        with pytest.raises(InvalidBuildRequest, match="not allowed"):
            await contact_addresses(url, policy, resolve)


async def test_a_name_that_does_not_resolve_could_not_be_reached():
    with pytest.raises(InvalidBuildRequest, match="could not be reached"):
        await contact_addresses("https://nowhere.invalid/a", OPEN, resolve)


def test_curl_is_pinned_to_the_checked_addresses():
    assert curl_resolve("https://github.com/a/b", ["140.82.121.4"]) == "github.com:443:140.82.121.4"
    assert (
        curl_resolve("http://v6.example.org:8080/a", ["2001:4860::8888", "1.2.3.4"])
        == "v6.example.org:8080:[2001:4860::8888],1.2.3.4"
    )
    assert curl_resolve("https://git.corp.example/a", []) is None


def test_git_is_pinned_and_follows_no_redirect_for_hosts_admitted_by_the_catch_all_only():
    from repo2dockerspawner.refs import git_config

    pinned = git_config("https://github.com/a/b", ["140.82.121.4"])
    assert "http.curloptResolve=github.com:443:140.82.121.4" in pinned and "http.followRedirects=false" in pinned
    assert git_config("http://172.17.0.1:18080/a.git", []) == ["-c", "protocol.version=2"]  # named: as it resolves
