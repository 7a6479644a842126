"""A cert-manager `Issuer` (or `ClusterIssuer`) and the `Secret` with its EAB key, as one YAML
stream for `kubectl apply -f -`: what `mintca acme eab create --format cert-manager` prints.

Written by hand (the CLI has no YAML dependency): every string is a JSON string, which is a
valid YAML double-quoted scalar, so no value can break the document's structure."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Literal

IssuerKind = Literal["Issuer", "ClusterIssuer"]
# A ClusterIssuer's Secrets live in cert-manager's "cluster resource namespace", which is
# cert-manager's own namespace unless its --cluster-resource-namespace flag says otherwise.
CLUSTER_RESOURCE_NAMESPACE = "cert-manager"
# Kubernetes object names and namespaces: RFC 1123 labels (namespaces) and subdomains (names).
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS1123_SUBDOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
DNS1123_LABEL = re.compile(rf"^{_LABEL}$")
# The entry of the EAB Secret's `data` that keySecretRef.key names (a name, not a secret).
EAB_DATA_KEY = "secret"


@dataclass(frozen=True)
class CertManagerIssuer:
    """What the manifest says: the Issuer's place, the ACME server and its trust, the solver."""

    kind: IssuerKind
    name: str
    namespace: str  # the Issuer's own; for a ClusterIssuer, where its Secrets live
    server: str  # the ACME directory URL
    ca_bundle_pem: bytes  # the CAs that verify the server's TLS certificate
    ingress_class: str
    email: str | None = None

    @property
    def eab_secret_name(self) -> str:
        return f"{self.name}-eab"

    @property
    def account_key_secret_name(self) -> str:
        return f"{self.name}-account-key"


def check_names(issuer: CertManagerIssuer) -> None:
    """Raises:
    ValueError: a name or namespace Kubernetes would refuse (kubectl would fail later, and
        less clearly)."""
    for what, value, pattern in (
        ("issuer name", issuer.name, DNS1123_SUBDOMAIN),
        ("namespace", issuer.namespace, DNS1123_LABEL),
        ("EAB secret name", issuer.eab_secret_name, DNS1123_SUBDOMAIN),
    ):
        if not pattern.match(value):
            raise ValueError(f"{what} {value!r} is not a valid Kubernetes name")


def format_cert_manager(issuer: CertManagerIssuer, *, kid: str, hmac_key: str) -> str:
    """The Secret, then the Issuer, as a YAML stream.

    cert-manager reads the EAB key from the Secret's `data[key]` and wants there the unpadded
    base64url key exactly as the CA gave it (its Issuer CRD: keySecretRef), so `data` holds
    the base64 of that text, as `kubectl create secret generic --from-literal` would store it.
    `caBundle` is base64 of PEM CAs (CRD: caBundle, format byte)."""
    check_names(issuer)
    q = json.dumps
    cluster = issuer.kind == "ClusterIssuer"
    issuer_meta = [f"  name: {q(issuer.name)}"]
    if not cluster:
        issuer_meta.append(f"  namespace: {q(issuer.namespace)}")
    acme = [
        f"    server: {q(issuer.server)}",
        f"    caBundle: {q(base64.b64encode(issuer.ca_bundle_pem).decode())}",
        *([f"    email: {q(issuer.email)}"] if issuer.email else []),
        "    privateKeySecretRef:",
        f"      name: {q(issuer.account_key_secret_name)}",
        "    externalAccountBinding:",
        f"      keyID: {q(kid)}",
        "      keySecretRef:",
        f"        name: {q(issuer.eab_secret_name)}",
        f"        key: {q(EAB_DATA_KEY)}",
        "    solvers:",
        "      - http01:",
        "          ingress:",
        f"            ingressClassName: {q(issuer.ingress_class)}",
    ]
    secret = [
        "apiVersion: v1",
        "kind: Secret",
        "metadata:",
        f"  name: {q(issuer.eab_secret_name)}",
        f"  namespace: {q(issuer.namespace)}",
        "type: Opaque",
        "data:",
        f"  {EAB_DATA_KEY}: {q(base64.b64encode(hmac_key.encode()).decode())}",
    ]
    manifest = [
        "apiVersion: cert-manager.io/v1",
        f"kind: {issuer.kind}",
        "metadata:",
        *issuer_meta,
        "spec:",
        "  acme:",
        *acme,
    ]
    return "\n".join(["---", *secret, "---", *manifest]) + "\n"
