"""The cert-manager manifest of `mintca acme eab create --format cert-manager` (pure): it parses
as YAML, every field is one cert-manager's Issuer CRD (cert-manager.io/v1) and Kubernetes'
Secret define, with the values cert-manager expects. `test_acme_cert_manager.py` enrolls with
those values against a live server."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from app.cli.acme_manifest import CertManagerIssuer, format_cert_manager
from app.cli.main import app

ROOT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KID = "kid-0123"
HMAC_KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA"  # unpadded base64url, 256 bits


def strict(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object schema that refuses unknown fields, as `kubectl apply --validate=strict` does
    (a misspelt `keyId` would otherwise be pruned silently and EAB never sent)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


STRING = {"type": "string"}
REF = strict({"name": STRING, "key": STRING}, ("name",))  # SecretKeySelector
# The part of cert-manager's Issuer/ClusterIssuer CRD (deploy/crds/cert-manager.io_issuers.yaml,
# openAPIV3Schema) that an ACME issuer with EAB and an http01 ingress solver uses; the other
# optional fields of spec.acme are listed so that only misspellings fail.
ACME = strict(
    {
        "server": {"type": "string", "pattern": "^https://"},
        "caBundle": {"type": "string", "contentEncoding": "base64"},
        "email": STRING,
        "skipTLSVerify": {"type": "boolean"},
        "disableAccountKeyGeneration": {"type": "boolean"},
        "enableDurationFeature": {"type": "boolean"},
        "preferredChain": {"type": "string", "maxLength": 64},
        "profile": STRING,
        "privateKeySecretRef": REF,
        "externalAccountBinding": strict(
            {
                "keyID": STRING,
                "keySecretRef": REF,
                "keyAlgorithm": {"enum": ["HS256", "HS384", "HS512"]},
            },
            ("keyID", "keySecretRef"),
        ),
        "solvers": {
            "type": "array",
            "minItems": 1,
            "items": strict(
                {
                    "http01": strict(
                        {
                            "ingress": strict(
                                {"ingressClassName": STRING, "class": STRING, "name": STRING}
                            )
                        }
                    )
                }
            ),
        },
    },
    ("privateKeySecretRef", "server"),
)
ISSUER_SCHEMA = strict(
    {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
        "metadata": strict({"name": STRING, "namespace": STRING}, ("name",)),
        "spec": strict({"acme": ACME}, ("acme",)),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)
SECRET_SCHEMA = strict(
    {
        "apiVersion": {"const": "v1"},
        "kind": {"const": "Secret"},
        "metadata": strict({"name": STRING, "namespace": STRING}, ("name", "namespace")),
        "type": {"const": "Opaque"},
        "data": {"type": "object", "additionalProperties": STRING},
    },
    ("apiVersion", "kind", "metadata", "data"),
)


def issuer(**changes: Any) -> CertManagerIssuer:
    values: dict[str, Any] = {
        "kind": "Issuer",
        "name": "mintca",
        "namespace": "default",
        "server": "https://ca.internal:8080/acme/directory",
        "ca_bundle_pem": ROOT_PEM,
        "ingress_class": "nginx",
    }
    return CertManagerIssuer(**{**values, **changes})


def documents(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    secret, manifest = [d for d in yaml.safe_load_all(text) if d is not None]
    jsonschema.validate(secret, SECRET_SCHEMA)
    jsonschema.validate(manifest, ISSUER_SCHEMA)
    return secret, manifest


@pytest.mark.parametrize(
    ("kind", "namespace", "issuer_namespace"),
    [
        pytest.param("Issuer", "team-a", "team-a", id="issuer-in-its-namespace"),
        pytest.param("ClusterIssuer", "cert-manager", None, id="cluster-issuer-secret-in-cm-ns"),
    ],
)
def test_manifest_has_the_fields_cert_manager_reads(
    kind: str, namespace: str, issuer_namespace: str | None
) -> None:
    text = format_cert_manager(issuer(kind=kind, namespace=namespace), kid=KID, hmac_key=HMAC_KEY)
    secret, manifest = documents(text)

    assert manifest["kind"] == kind, text
    assert manifest["metadata"].get("namespace") == issuer_namespace, text
    acme = manifest["spec"]["acme"]
    assert acme["server"] == "https://ca.internal:8080/acme/directory", text
    assert base64.b64decode(acme["caBundle"], validate=True) == ROOT_PEM, text
    assert acme["privateKeySecretRef"] == {"name": "mintca-account-key"}, text
    eab = acme["externalAccountBinding"]
    assert eab["keyID"] == KID, text
    assert "keyAlgorithm" not in eab, "deprecated: cert-manager uses HS256 anyway"
    # The Secret the Issuer names, in the namespace cert-manager looks in for it.
    assert eab["keySecretRef"]["name"] == secret["metadata"]["name"], text
    assert secret["metadata"]["namespace"] == namespace, text
    # cert-manager wants the key as the CA gave it (unpadded base64url) in data[key].
    stored = secret["data"][eab["keySecretRef"]["key"]]
    assert base64.b64decode(stored, validate=True).decode() == HMAC_KEY, text
    assert acme["solvers"] == [{"http01": {"ingress": {"ingressClassName": "nginx"}}}], text


def test_email_is_written_when_given() -> None:
    _, manifest = documents(
        format_cert_manager(issuer(email="ops@example.internal"), kid=KID, hmac_key=HMAC_KEY)
    )
    assert manifest["spec"]["acme"]["email"] == "ops@example.internal"


def test_values_cannot_break_the_yaml_structure() -> None:
    """Every scalar is quoted: a value with YAML syntax in it stays one string."""
    hostile = 'x"\n  skipTLSVerify: true\n# : [a]'
    text = format_cert_manager(
        issuer(server=f"https://h/{hostile}"), kid=hostile, hmac_key=HMAC_KEY
    )
    _, manifest = documents(text)
    acme = manifest["spec"]["acme"]
    assert acme["externalAccountBinding"]["keyID"] == hostile, text
    assert acme["server"] == f"https://h/{hostile}", text
    assert "skipTLSVerify" not in acme, text


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"name": "MintCA"}, id="uppercase-name"),
        pytest.param({"name": "a_b"}, id="underscore-name"),
        pytest.param({"name": "x" * 250}, id="name-too-long"),
        pytest.param({"namespace": "a.b"}, id="namespace-not-a-label"),
        pytest.param({"namespace": ""}, id="empty-namespace"),
    ],
)
def test_names_kubernetes_refuses_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not a valid Kubernetes name"):
        format_cert_manager(issuer(**changes), kid=KID, hmac_key=HMAC_KEY)


@pytest.mark.parametrize(
    ("options", "exit_code", "message"),
    [
        pytest.param(["--issuer-name", "Bad_Name"], 2, "not a valid Kubernetes name", id="name"),
        pytest.param(["--namespace", "a.b"], 2, "not a valid Kubernetes name", id="namespace"),
        pytest.param(
            ["--ca-bundle", "{tmp}/missing.pem"], 1, "cannot read the CA bundle", id="no-file"
        ),
        pytest.param(["--ca-bundle", "{tmp}/empty.pem"], 1, "no PEM certificate", id="no-pem"),
    ],
)
def test_cli_refuses_bad_options_before_making_a_credential(
    tmp_path: Path, options: list[str], exit_code: int, message: str
) -> None:
    """Nothing listens at --url: a refusal that came after a request would say "cannot
    reach", so these prove the options are checked before any credential is made."""
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    (tmp_path / "root.pem").write_bytes(ROOT_PEM)
    args = [
        "acme", "eab", "create", "--name", "*.internal", "--format", "cert-manager",
        "--data-dir", str(tmp_path), "--url", "https://127.0.0.1:9",
        *(option.format(tmp=tmp_path) for option in options),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == exit_code, result.output
    assert message in result.output, result.output
    assert "cannot reach" not in result.output, result.output


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        pytest.param(["--server", "https://ca.internal/acme/directory"], False, id="https"),
        pytest.param(["--server", "http://ca.internal/acme/directory"], True, id="http-warns"),
    ],
)
def test_cli_with_good_options_goes_on_to_the_request(
    tmp_path: Path, options: list[str], warned: bool
) -> None:
    """The control for the test above: the same command with good options reaches the
    request (and, with nothing listening, says so); a plain-HTTP directory, where caBundle
    means nothing, gets a warning but is not refused."""
    (tmp_path / "root.pem").write_bytes(ROOT_PEM)
    args = [
        "acme", "eab", "create", "--name", "*.internal", "--format", "cert-manager",
        "--data-dir", str(tmp_path), "--url", "https://127.0.0.1:9", *options,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "cannot reach" in result.output, result.output
    assert ("is not https" in result.output) is warned, result.output
