"""ACME identifiers (RFC 8555 §7.1.4, RFC 8738 for IPs), the EAB key's wrapping under the
KEK, and the RFC 8555 §7.6 revocation reason codes."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from app.ca.names import RequestedNames, is_dns_name, is_ip
from app.errors import AcmeProblemError

MAX_IDENTIFIERS = 100
_NONCE_BYTES = 12
# RFC 5280 reason codes an ACME client may give (§7.6); 2 (cACompromise), 6 (hold), 8, 9, 10
# are for the CA's operators, not for subscribers.
REVOCATION_REASONS = {
    0: "unspecified",
    1: "keyCompromise",
    3: "affiliationChanged",
    4: "superseded",
    5: "cessationOfOperation",
}


@dataclass(frozen=True, order=True)
class Identifier:
    type: str  # "dns" | "ip"
    value: str

    @property
    def wildcard(self) -> bool:
        return self.value.startswith("*.")

    @property
    def base_name(self) -> str:
        """The name whose control is proven: `*.a.b` is proven on `a.b` (RFC 8555 §7.1.3)."""
        return self.value[2:] if self.wildcard else self.value

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


def parse_identifier(item: object) -> Identifier:
    """Raises:
    AcmeProblemError: unsupportedIdentifier (a type other than dns/ip), rejectedIdentifier
        (a value that is no DNS name or IP address), malformed."""
    if not isinstance(item, dict) or not isinstance(item.get("value"), str):
        raise AcmeProblemError("malformed", 'an identifier is {"type", "value"}')
    kind, value = item.get("type"), str(item["value"])
    if kind == "ip":
        if not is_ip(value):
            raise AcmeProblemError("rejectedIdentifier", f"not an IP address: {value!r}")
        return Identifier("ip", ipaddress.ip_address(value).compressed)
    if kind == "dns":
        name = value.lower().rstrip(".")
        if is_ip(name) or not is_dns_name(name) or "*" in name[2:]:
            raise AcmeProblemError("rejectedIdentifier", f"not a DNS name: {value!r}")
        return Identifier("dns", name)
    raise AcmeProblemError("unsupportedIdentifier", f"identifier type {kind!r} is not issued")


def parse_identifiers(items: object) -> list[Identifier]:
    """Raises: AcmeProblemError: malformed, or as parse_identifier."""
    if not isinstance(items, list) or not items:
        raise AcmeProblemError("malformed", "identifiers must be a non-empty list")
    if len(items) > MAX_IDENTIFIERS:
        raise AcmeProblemError("malformed", f"at most {MAX_IDENTIFIERS} identifiers per order")
    return sorted(set(parse_identifier(item) for item in items))


def identifiers_of_csr(names: RequestedNames) -> set[Identifier]:
    """The identifiers a CSR asks for: DNS and IP SANs, and a CN (which must repeat one)."""
    found = {Identifier("dns", n) for n in names.dns} | {Identifier("ip", i) for i in names.ips}
    if names.uris or names.emails:
        raise AcmeProblemError("badCSR", "ACME certificates carry DNS names and IPs only")
    if names.common_name is not None:
        cn = names.common_name
        cn_id = Identifier("ip", cn) if is_ip(cn) else Identifier("dns", cn.lower())
        if cn_id not in found:
            raise AcmeProblemError("badCSR", f"the CN {cn!r} is not among the CSR's SANs")
    return found
