"""
Password hashing for the user table: argon2id through argon2-cffi. Every function here is
CPU-bound and blocking, so the store calls them through its thread pool, never on the reactor.

The parameters (time_cost 2, 19 MiB, one lane: OWASP's baseline for argon2id) take about 35 ms
per verification on one core of a small x86 server and should stay within the 20-100 ms the
specification asks for on a Raspberry Pi 4. Hashes made with other parameters still verify
and are replaced by `needs_rehash` after the next successful login.
"""

from __future__ import annotations

import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)

_dummy_lock = threading.Lock()
_dummy: list[str] = []


def hash_password(password: str) -> str:
    """A new salted argon2id hash of password."""
    return HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether password matches the stored hash; a malformed stored hash never matches."""
    try:
        return HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the stored hash was made with other parameters than the current ones."""
    try:
        return HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def dummy_hash() -> str:
    """
    A hash of a random password made once per process, verified against for unknown users so
    that they take as long to refuse as a wrong password does.
    """
    with _dummy_lock:
        if not _dummy:
            _dummy.append(hash_password(secrets.token_urlsafe(16)))
        return _dummy[0]


def new_password() -> str:
    """A random password for a generated account (24 URL-safe characters)."""
    return secrets.token_urlsafe(18)
