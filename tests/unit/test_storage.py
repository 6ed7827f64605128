import socket

import pytest

from videogen_runner import storage
from videogen_runner.addresses import why_not_public
from videogen_runner.errors import InvalidRequest
from videogen_runner.storage import check_image_url


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data", "https://127.0.0.1/a.png", "https://[::1]/a.png",
    "https://[fe80::1]/a.png", "https://0.0.0.0/a.png", "http://example.com/a.png", "file:///etc/passwd",
    "s3://bucket-only", "s3:///key-only", "https://10.0.0.8/a.png", "https://[::ffff:127.0.0.1]/x.png",
])
def test_forbidden_image_urls(url):
    with pytest.raises(InvalidRequest, match="image:"):
        check_image_url(url)


@pytest.mark.parametrize("address, why", [
    ("127.0.0.1", "loopback"), ("10.0.0.8", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"), ("169.254.169.254", "link-local"), ("0.0.0.0", "this network"),
    ("192.0.2.1", "documentation"), ("198.18.0.1", "benchmarking"), ("224.0.0.251", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"), ("192.0.0.170", "IETF"),
    ("::", "unspecified"), ("::1", "loopback"), ("fe80::1%eth0", "link-local"), ("fd00:ec2::254", "unique-local"),
    ("fc00::1", "unique-local"), ("ff02::1", "multicast"), ("2001:db8::1", "documentation"),
    ("::ffff:127.0.0.1", "that is 127.0.0.1) is loopback"), ("::ffff:169.254.169.254", "link-local"),
    ("::10.0.0.1", "that is 10.0.0.1) is private"), ("2002:a9fe:a9fe::1", "that is 169.254.169.254"),
    ("64:ff9b::a00:1", "that is 10.0.0.1) is private"), ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"), ("::ffff:8.8.8.8", "IPv4-mapped"),
    ("100::1", "discard"), ("fec0::1", "site-local"),
])
def test_non_public_addresses_are_named(address, why):
    assert why in (why_not_public(address) or "public")


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_pass(address):
    assert why_not_public(address) is None


@pytest.fixture
def resolver(monkeypatch):
    """A resolver we control, and no connection at all: nothing leaves this machine."""
    answers = {}

    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in answers[host]]

    def no_connection(*args, **kwargs):
        raise AssertionError(f"connected to {args}")

    monkeypatch.setattr(storage.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(storage.socket, "create_connection", no_connection)
    return answers


@pytest.mark.parametrize("addresses", [
    ["10.0.0.8"], ["::ffff:10.0.0.8"], ["93.184.215.14", "169.254.169.254"], ["fd00::1"], ["100.64.0.9"],
])
def test_a_host_resolving_to_any_non_public_address_is_refused(resolver, addresses):
    resolver["images.example"] = addresses
    with pytest.raises(InvalidRequest, match="image: images.example resolves to .* only public addresses"):
        storage.fetch_image("https://images.example/a.png", storage.Output())


def test_the_checked_public_address_is_the_one_to_connect_to(resolver):
    resolver["images.example"] = ["93.184.215.14"]
    assert check_image_url("s3://inputs/a/b.png") is None
    assert check_image_url("https://images.example/a.png") == "93.184.215.14"
