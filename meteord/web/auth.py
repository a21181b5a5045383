"""
HTTP Basic authentication against the store's users, with the roles each route needs.

Verifying a password is deliberately slow (the store hashes in a thread), and Basic sends the
password with every request, so a successful verification is remembered for a short time
(60 s by default) under an HMAC of user id and password with a random per-process key: the
password itself is never kept. `Authenticator.forget` drops a user's entries when the admin API
changes or deletes that user.

Failed logins are counted per client address over a sliding minute. Once an address has five
or more failures in that minute, each of its further attempts that is not already in the cache
waits ``base_delay * 2 ** (failures - 5)`` seconds (capped at ``max_delay``) before the
password is checked; the wait happens before verification, so parallel connections do not get
around it. The client address is the TCP peer: headers such as ``X-Forwarded-For`` are not
trusted.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.web.iweb import IRequest

from meteord.errors import AuthenticationFailed
from meteord.model import InvalidEntity, User
from meteord.web.errors import BASIC_CHALLENGE, APIError

__all__ = ["Authenticator"]

_FREE_FAILURES = 4


def _unauthorized(message: str = "Authentication required") -> APIError:
    return APIError(401, message, headers={b"WWW-Authenticate": BASIC_CHALLENGE})


def _credentials(request: IRequest) -> tuple[str, str]:
    """The user id and password of a Basic Authorization header, or a 401."""
    header = request.getHeader(b"authorization")
    if header is None:
        raise _unauthorized()
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        raise _unauthorized("Only HTTP Basic authentication is supported")
    try:
        decoded = binascii.a2b_base64(encoded.strip(), strict_mode=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _unauthorized("Malformed Basic credentials") from None
    user_id, colon, password = decoded.partition(":")
    if not colon:
        raise _unauthorized("Malformed Basic credentials")
    return user_id, password


class Authenticator:
    """
    Checks the credentials of requests against ``store.get_user``. ``clock`` times the cache
    and the slow-down; ``cache_seconds`` is how long a verified login is remembered.
    """

    def __init__(self, store: object, clock: IReactorTime, *, cache_seconds: float = 60.0,
                 failure_window: float = 60.0, base_delay: float = 1.0,
                 max_delay: float = 30.0, max_addresses: int = 10_000) -> None:
        self._store = store
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._failure_window = failure_window
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._max_addresses = max_addresses
        self._key = secrets.token_bytes(32)
        self._verified: dict[bytes, tuple[User, float]] = {}
        self._keys_by_user: dict[str, set[bytes]] = {}
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._checking: dict[bytes, list[Deferred[User]]] = {}

    def _cache_key(self, user_id: str, password: str) -> bytes:
        user = user_id.encode("utf-8", "surrogatepass")
        message = len(user).to_bytes(4, "big") + user + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _cached(self, key: bytes) -> User | None:
        entry = self._verified.get(key)
        if entry is None:
            return None
        user, expires = entry
        if expires <= self._clock.seconds():
            self._drop(key, user.user_id)
            return None
        return user

    def _drop(self, key: bytes, user_id: str) -> None:
        self._verified.pop(key, None)
        keys = self._keys_by_user.get(user_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_by_user[user_id]

    def _remember(self, key: bytes, user: User) -> None:
        now = self._clock.seconds()
        for old_key, (old_user, expires) in list(self._verified.items()):
            if expires <= now:
                self._drop(old_key, old_user.user_id)
        self._verified[key] = (user, now + self._cache_seconds)
        self._keys_by_user.setdefault(user.user_id, set()).add(key)

    def forget(self, user_id: str) -> None:
        """Drop every remembered login of ``user_id`` (after a change or deletion)."""
        for key in self._keys_by_user.pop(user_id, set()):
            self._verified.pop(key, None)

    def _recent_failures(self, address: str) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        horizon = self._clock.seconds() - self._failure_window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
        return failures

    def delay_for(self, address: str) -> float:
        """Seconds the next uncached attempt from ``address`` waits before it is checked."""
        count = len(self._recent_failures(address))
        if count <= _FREE_FAILURES:
            return 0.0
        return min(self._max_delay, self._base_delay * 2.0 ** (count - _FREE_FAILURES - 1))

    def _record_failure(self, address: str) -> None:
        failures = self._recent_failures(address)
        if address not in self._failures:
            self._failures[address] = failures
            while len(self._failures) > self._max_addresses:
                self._failures.popitem(last=False)
        self._failures.move_to_end(address)
        failures.append(self._clock.seconds())

    async def authenticate(self, request: IRequest) -> User:
        """
        The user whose credentials ``request`` carries; an `APIError` 401 otherwise. Requests
        that arrive with the same credentials while they are being checked wait for that one
        check instead of starting their own (a camera's exporter opens several connections at
        once, and each password check is slow and memory-hungry by design).
        """
        user_id, password = _credentials(request)
        key = self._cache_key(user_id, password)
        user = self._cached(key)
        if user is not None:
            return user
        waiter: Deferred[User] = Deferred()
        waiters = self._checking.get(key)
        if waiters is not None:
            waiters.append(waiter)
        else:
            # Registered before the check starts: a check that ends at once (the store
            # refusing while it reconnects) must still find this waiter.
            self._checking[key] = [waiter]
            check = Deferred.fromCoroutine(
                self._check(user_id, password, key, _client_address(request)))
            check.addBoth(self._deliver, key)
        return await waiter

    def _deliver(self, outcome: Any, key: bytes) -> None:
        for waiter in self._checking.pop(key):
            if not waiter.called:  # a waiter whose client went away was cancelled
                waiter.callback(outcome)

    async def _check(self, user_id: str, password: str, key: bytes, address: str) -> User:
        delay = self.delay_for(address)
        if delay > 0:
            await deferLater(self._clock, delay)
        try:
            user = await self._store.get_user(user_id, password)  # type: ignore[attr-defined]
        except (AuthenticationFailed, InvalidEntity):
            self._record_failure(address)
            raise _unauthorized("Invalid user name or password") from None
        self._remember(key, user)
        return user

    async def require(self, request: IRequest, role: str) -> User:
        """The authenticated user of ``request`` if they have ``role``; else a 401 or 403."""
        user = await self.authenticate(request)
        if not user.has_role(role):
            raise APIError(403, f"Missing role {role}")
        return user


def _client_address(request: IRequest) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", None) or str(peer)
