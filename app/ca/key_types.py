"""The names of the key types MintCA generates: stdlib only, so the CLI can offer them
without importing cryptography."""

from __future__ import annotations

from typing import Literal, get_args

KeyType = Literal["ec-p384", "ec-p256", "rsa-4096", "rsa-3072", "rsa-2048", "ed25519"]
KEY_TYPES: tuple[str, ...] = get_args(KeyType)
