"""Which network addresses a request may make the runner reach: public ones only.

An input URL names a host of the user's choosing; fetched from inside the cluster it could reach
the node, cloud metadata or any private service. Every address is first unmapped (the IPv4
address inside an IPv4-mapped, IPv4-compatible, 6to4 or NAT64 address is judged as itself),
then refused when it, or the IPv6 form it came in, lies in a range that is not globally
routable. Only NAT64 of a public address passes (DNS64 gives those on IPv6-only clusters); the
other IPv4-in-IPv6 forms have no use in a URL. The same table gives the API server's CEL rule
for literal addresses (operator models), so admission and fetch time judge alike.
"""

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NON_PUBLIC = {
    "0.0.0.0/8": "this network",
    "10.0.0.0/8": "private (RFC 1918)",
    "100.64.0.0/10": "carrier-grade NAT (RFC 6598)",
    "127.0.0.0/8": "loopback",
    "169.254.0.0/16": "link-local (cloud metadata)",
    "172.16.0.0/12": "private (RFC 1918)",
    "192.0.0.0/24": "IETF protocol assignments",
    "192.0.2.0/24": "documentation",
    "192.88.99.0/24": "6to4 relay anycast",
    "192.168.0.0/16": "private (RFC 1918)",
    "198.18.0.0/15": "benchmarking",
    "198.51.100.0/24": "documentation",
    "203.0.113.0/24": "documentation",
    "224.0.0.0/4": "multicast",
    "240.0.0.0/4": "reserved",
    "::/128": "unspecified",
    "::1/128": "loopback",
    "::/96": "IPv4-compatible",
    "::ffff:0:0/96": "IPv4-mapped",
    "64:ff9b:1::/48": "local-use NAT64",
    "100::/64": "discard",
    "2001::/23": "IETF protocol assignments (Teredo, …)",
    "2001:db8::/32": "documentation",
    "2002::/16": "6to4",
    "3fff::/20": "documentation",
    "fc00::/7": "unique-local",
    "fe80::/10": "link-local",
    "fec0::/10": "site-local",
    "ff00::/8": "multicast",
}
NETWORKS = [(ipaddress.ip_network(network), why) for network, why in NON_PUBLIC.items()]
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def unmapped(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, IPv4-compatible, 6to4 or NAT64 IPv6 address."""
    if ip.version == 4:
        return ip
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip in NAT64 or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def why_not_public(address: str) -> str | None:
    """None for a globally routable address; else what the address (unmapped first) is."""
    ip = ipaddress.ip_address(address.split("%")[0])  # a zone (fe80::1%eth0) is link-local anyway
    inner = unmapped(ip)
    shown = f"{ip}" if inner == ip else f"{ip} (that is {inner})"
    for candidate in dict.fromkeys((inner, ip)):
        for network, why in NETWORKS:
            if candidate.version == network.version and candidate in network:
                return f"{shown} is {why}"
    if not inner.is_global:
        return f"{shown} is not globally routable"
    return None


def literal_address(host: str) -> str | None:
    """The address when a URL's host is a literal address (brackets stripped), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%")[0]))
    except ValueError:
        return None
