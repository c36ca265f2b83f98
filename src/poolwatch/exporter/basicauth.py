"""Basic auth against bcrypt hashes, bounded so that nobody can queue a legitimate scrape.

Modelled on exporter-toolkit's ``web/handler.go`` (which caches the outcome of each
(user, hash, password) check and answers unknown users by checking a fixed dummy hash) and
stricter where that leaves a gap:

- **cached**: a credential that passed is remembered (a keyed digest, never the password),
  so Prometheus' scrapes cost one bcrypt per credential per process; failed ones are
  remembered too (in a separate, larger cache, so failures cannot evict successes);
- **bounded**: one bcrypt runs at a time, in a thread of its own (not the loop's default
  executor, which the database driver needs for DNS). A check waits at most
  ``queue_wait`` (1 s) for its turn and at most ``max_waiting`` checks wait; anything beyond
  is answered ``429 Too Many Requests`` at once. A cached credential skips the queue, so
  200 wrong passwords cannot delay a scrape whose credential was verified before;
- **no user oracle**: an unknown user is checked against a dummy hash with the same cost as
  the configured users' hashes (exporter-toolkit's is fixed at cost 10, so users with other
  costs answer in measurably different times).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import os
import secrets
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import bcrypt

_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class Verdict(enum.Enum):
    """The outcome of checking an ``Authorization`` header."""

    ALLOWED = "allowed"
    DENIED = "denied"
    BUSY = "busy"  # too many checks waiting: try again in a moment (429)


def bcrypt_cost(hashed: bytes) -> int:
    """The cost of a ``$2x$NN$...`` hash (the caller validated its shape)."""
    return int(hashed[4:6])


def dummy_hash(cost: int) -> bytes:
    """A valid bcrypt hash at ``cost`` that no password matches (random digest)."""
    digest = "".join(secrets.choice(_BCRYPT_ALPHABET) for _ in range(31)).encode()
    return bytes(bcrypt.gensalt(rounds=cost)) + digest


class _Lru:
    """A bounded set of digests, least recently used evicted first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, key: bytes) -> bool:
        if key in self._items:
            self._items.move_to_end(key)
            return True
        return False

    def add(self, key: bytes) -> None:
        self._items[key] = None
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against ``users`` (name -> bcrypt hash)."""

    def __init__(
        self, users: dict[str, bytes], *, queue_wait: float = 1.0, max_waiting: int = 32
    ) -> None:
        self.users = users
        self.queue_wait = queue_wait
        self.max_waiting = max_waiting
        self.bcrypt_checks = 0
        self._dummy = dummy_hash(max(map(bcrypt_cost, users.values()), default=10))
        self._key = os.urandom(32)
        self._verified = _Lru(64)
        self._rejected = _Lru(4096)
        self._executor: ThreadPoolExecutor | None = None
        self._slot: asyncio.Semaphore | None = None
        self._waiting = 0

    def _digest(self, user: bytes, password: bytes) -> bytes:
        message = b"%d:%s%s" % (len(user), user, password)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    async def check(self, header: str | None) -> Verdict:
        """ALLOWED when ``header`` names a user with the right password."""
        credentials = _parse(header)
        if credentials is None:
            return Verdict.DENIED
        user, password = credentials
        key = self._digest(user, password)
        if key in self._verified:
            return Verdict.ALLOWED
        if key in self._rejected:
            return Verdict.DENIED
        hashed = self.users.get(user.decode("utf-8", "surrogateescape"))
        ok = await self._bcrypt(password, hashed or self._dummy)
        if ok is None:
            return Verdict.BUSY
        if ok and hashed is not None:
            self._verified.add(key)
            return Verdict.ALLOWED
        self._rejected.add(key)
        return Verdict.DENIED

    async def _bcrypt(self, password: bytes, hashed: bytes) -> bool | None:
        """bcrypt.checkpw in the one bcrypt thread; None when the queue is full or too slow."""
        if self._waiting >= self.max_waiting:
            return None
        if self._slot is None or self._executor is None:
            self._slot = asyncio.Semaphore(1)
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slot.acquire(), self.queue_wait)
        except asyncio.TimeoutError:
            return None
        finally:
            self._waiting -= 1
        try:
            self.bcrypt_checks += 1
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, _checkpw, password, hashed)
        finally:
            self._slot.release()


def _parse(header: str | None) -> tuple[bytes, bytes] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:  # validated at start; never let a surprise become a 500
        return False
