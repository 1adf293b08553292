"""Key agreement, key derivation, the mask generator and share encryption.

All primitives come from ``cryptography``: X25519 for agreement, HKDF-SHA256 to derive one
seed per (pair, job, round, purpose), the ChaCha20 keystream as the pseudo-random generator
that expands a seed to a mask, and ChaCha20-Poly1305 to encrypt shares to their holder.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcrm.errors import MessageRejectedError
from fedcrm.secagg import wire

_ZERO_NONCE = bytes(16)  # each ChaCha20 key below is derived for exactly one use


def new_private_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def public_key(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def agree(private: bytes, peer_public: bytes) -> bytes:
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise MessageRejectedError("a peer advertised an invalid X25519 key", hint="that peer is excluded") from None


def derive(secret: bytes, purpose: str, **context: object) -> bytes:
    info = wire.encode({"purpose": purpose, **context})
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def expand(seed: bytes, length: int) -> np.ndarray:
    """``length`` uniformly random 64-bit words from a 32-byte seed (ChaCha20 keystream)."""
    encryptor = Cipher(algorithms.ChaCha20(seed, _ZERO_NONCE), mode=None).encryptor()
    return np.frombuffer(encryptor.update(bytes(8 * length)), dtype="<u8").astype(np.uint64, copy=False)


def pairwise_seed(shared: bytes, job_id: str, round: int, a: str, b: str) -> bytes:
    low, high = sorted((a, b))
    return derive(shared, "pairwise-mask", job=job_id, round=round, low=low, high=high)


def encrypt_share(shared: bytes, aad: dict[str, object], plaintext: bytes, job_id: str) -> bytes:
    key = derive(shared, "share-encryption", job=job_id)
    nonce = os.urandom(12)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, wire.encode(aad))


def decrypt_share(shared: bytes, aad: dict[str, object], ciphertext: bytes, job_id: str) -> bytes:
    key = derive(shared, "share-encryption", job=job_id)
    try:
        return ChaCha20Poly1305(key).decrypt(ciphertext[:12], ciphertext[12:], wire.encode(aad))
    except (InvalidTag, ValueError):
        raise MessageRejectedError(
            f"an encrypted share from {aad.get('owner')!r} does not authenticate",
            sender=str(aad.get("owner")), hint="it was altered or re-addressed; it is ignored",
        ) from None
