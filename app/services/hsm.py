"""CA keys in a PKCS#11 token (an HSM; SoftHSM2 in the tests): made inside the token,
sensitive and never extractable, labelled with their ca_id; the database keeps only a
reference (`cas.key_ref`). One logged-in session per process, its calls under one lock
(a PKCS#11 session must not be used by two threads at once)."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
from pkcs11.util.rsa import encode_rsa_public_key

from app.ca.external import ExternalSigner
from app.ca.issuance import ca_id_for
from app.ca.keys import PublicKey
from app.ca.signer import hash_for_key
from app.config import Settings
from app.errors import ConfigurationError

log = logging.getLogger(__name__)

# RFC 7512 PKCS#11 URI of a CA's private key, by label; what `cas.key_ref` holds.
KEY_REF_PREFIX = "pkcs11:object="
_CURVES = {"ec-p256": "secp256r1", "ec-p384": "secp384r1"}
_RSA_BITS = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}
# Private key attributes (PKCS#11 v2.40 §4.9): the key can sign and nothing can read it out.
_PRIVATE_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}
_PUBLIC_TEMPLATE = {Attribute.TOKEN: True, Attribute.VERIFY: True}
TOKEN_KEY_TYPES = (*_CURVES, *_RSA_BITS)


def key_ref(ca_id: str) -> str:
    return f"{KEY_REF_PREFIX}{ca_id};type=private"


def ca_id_of_ref(ref: str) -> str:
    """Raises:
    ConfigurationError: a reference this version does not understand."""
    if not ref.startswith(KEY_REF_PREFIX):
        raise ConfigurationError(f"unknown CA key reference {ref[:80]!r}")
    return ref[len(KEY_REF_PREFIX) :].split(";", 1)[0]


class Token:
    """One PKCS#11 token, logged in as its user. Build it with `open_token(settings)`."""

    def __init__(self, session: Any, label: str) -> None:
        self._session = session
        self.label = label
        self._lock = threading.Lock()

    def generate(self, key_type: str) -> ExternalSigner:
        """A new CA key pair made inside the token, labelled and identified by its ca_id.

        Raises:
            ConfigurationError: a key type the token path does not offer (Ed25519)."""
        with self._lock:
            public, private, public_key = self._generate(key_type)
            ca_id = ca_id_for(public_key)  # known only now: it is the public key's SKI
            for key in (public, private):
                key[Attribute.LABEL] = ca_id
                key[Attribute.ID] = bytes.fromhex(ca_id)
        log.info("made CA key %s in PKCS#11 token %r", ca_id, self.label)
        return self._signer(private, public_key)

    def signer(self, ref: str, public_key: PublicKey) -> ExternalSigner:
        """The signer for the CA key `ref` names, checked against the CA's public key by
        one test signature (a token holding another key under the label fails here, at
        start, not in every answer).

        Raises:
            ConfigurationError: no such key in the token, or it does not match."""
        ca_id = ca_id_of_ref(ref)
        with self._lock:
            try:
                private = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=ca_id)
            except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned) as exc:
                raise ConfigurationError(
                    f"PKCS#11 token {self.label!r} has no single private key labelled {ca_id} "
                    f"({type(exc).__name__}); is MINTCA_PKCS11_TOKEN_LABEL the token used at init?"
                ) from None
        signer = self._signer(private, public_key)
        _check_pair(signer, public_key, ca_id)
        return signer

    def _generate(self, key_type: str) -> tuple[Any, Any, PublicKey]:
        if key_type in _CURVES:
            parameters = self._session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[key_type])},
                local=True,
            )
            public, private = parameters.generate_keypair(
                store=True, public_template=_PUBLIC_TEMPLATE, private_template=_PRIVATE_TEMPLATE
            )
            return public, private, load_der_public_key(encode_ec_public_key(public))  # type: ignore[return-value]  # an EC key
        if key_type in _RSA_BITS:
            public, private = self._session.generate_keypair(
                KeyType.RSA,
                _RSA_BITS[key_type],
                store=True,
                public_template=_PUBLIC_TEMPLATE,
                private_template=_PRIVATE_TEMPLATE,
            )
            return public, private, load_der_public_key(encode_rsa_public_key(public))  # type: ignore[return-value]  # an RSA key
        raise ConfigurationError(
            f"key type {key_type} cannot be made in the PKCS#11 token; "
            f"choose one of {', '.join(TOKEN_KEY_TYPES)}"
        )

    def _signer(self, private: Any, public_key: PublicKey) -> ExternalSigner:
        hash_algorithm = hash_for_key(public_key)
        assert hash_algorithm is not None  # EC and RSA keys only
        digest_name = hash_algorithm.name

        def sign(data: bytes) -> bytes:
            with self._lock:
                if isinstance(public_key, ec.EllipticCurvePublicKey):
                    # CKM_ECDSA signs a digest and returns r||s (PKCS#11 v2.40 §2.3.1);
                    # X.509 wants DER ECDSA-Sig-Value (RFC 3279 §2.2.3).
                    raw = private.sign(
                        hashlib.new(digest_name, data).digest(), mechanism=Mechanism.ECDSA
                    )
                else:
                    raw = private.sign(data, mechanism=_RSA_MECHANISMS[digest_name])
            if isinstance(public_key, ec.EllipticCurvePublicKey):
                half = len(raw) // 2
                return encode_dss_signature(
                    int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
                )
            return bytes(raw)

        return ExternalSigner(public_key, sign)


_RSA_MECHANISMS = {
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
    "sha512": Mechanism.SHA512_RSA_PKCS,
}


def _check_pair(signer: ExternalSigner, public_key: PublicKey, ca_id: str) -> None:
    """Raises:
    ConfigurationError: the token's key does not sign for the CA's public key."""
    message = b"mintca pkcs11 key check " + ca_id.encode()
    signature = signer.sign_bytes(message)
    hash_algorithm = hash_for_key(public_key)
    assert hash_algorithm is not None
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hash_algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, padding.PKCS1v15(), hash_algorithm)
    except InvalidSignature:
        raise ConfigurationError(
            f"the PKCS#11 key labelled {ca_id} does not match CA {ca_id}'s certificate"
        ) from None


def is_configured(settings: Settings) -> bool:
    return settings.pkcs11_module is not None


# PKCS#11 login state belongs to the whole process (a second C_Login says
# CKR_USER_ALREADY_LOGGED_IN), so each process opens a token once and shares it.
_opened: dict[tuple[str, str], Token] = {}
_opening = threading.Lock()


def open_token(settings: Settings) -> Token | None:
    """The configured token, logged in with the PIN from MINTCA_PKCS11_PIN_FILE (once per
    process); None when MINTCA_PKCS11_MODULE is not set.

    Raises:
        ConfigurationError: as one line, naming what is wrong (module, token, PIN file, PIN).
    """
    module = settings.pkcs11_module
    if module is None:
        return None
    label = settings.pkcs11_token_label
    if not label:
        raise ConfigurationError("MINTCA_PKCS11_MODULE is set: set MINTCA_PKCS11_TOKEN_LABEL too")
    pin = _read_pin(settings.pkcs11_pin_file)
    if not Path(module).is_file():
        raise ConfigurationError(f"MINTCA_PKCS11_MODULE: no PKCS#11 module at {module}")
    with _opening:
        token = _opened.get((str(module), label))
        if token is None:
            token = _opened[(str(module), label)] = _login(module, label, pin)
    return token


def _login(module: Path, label: str, pin: str) -> Token:
    try:
        token = pkcs11.lib(str(module)).get_token(token_label=label)
    except pkcs11.NoSuchToken:
        raise ConfigurationError(
            f"PKCS#11: no token labelled {label!r} in {module} (MINTCA_PKCS11_TOKEN_LABEL)"
        ) from None
    except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:  # not a PKCS#11 module
        raise ConfigurationError(
            f"MINTCA_PKCS11_MODULE {module}: cannot use it ({type(exc).__name__})"
        ) from None
    try:
        session = token.open(user_pin=pin, rw=True)
    except pkcs11.PinIncorrect:
        raise ConfigurationError(
            f"PKCS#11: wrong PIN for token {label!r} (MINTCA_PKCS11_PIN_FILE)"
        ) from None
    except pkcs11.PinLocked:
        raise ConfigurationError(f"PKCS#11: the PIN of token {label!r} is locked") from None
    except pkcs11.PKCS11Error as exc:
        raise ConfigurationError(
            f"PKCS#11: cannot log in to token {label!r}: {type(exc).__name__}"
        ) from None
    return Token(session, label)


def _read_pin(path: Path | None) -> str:
    """The user PIN, read from a file only: never from the environment (which other
    processes and crash reports see) nor from the database."""
    if path is None:
        raise ConfigurationError("MINTCA_PKCS11_MODULE is set: set MINTCA_PKCS11_PIN_FILE too")
    try:
        pin = path.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(
            f"MINTCA_PKCS11_PIN_FILE: cannot read {path}: {exc.strerror}"
        ) from None
    if not pin:
        raise ConfigurationError(f"MINTCA_PKCS11_PIN_FILE: {path} is empty")
    return pin
