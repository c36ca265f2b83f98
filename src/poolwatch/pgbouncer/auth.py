"""Password authentication for the PostgreSQL wire protocol: md5 and SCRAM-SHA-256.

Only what PgBouncer's admin console needs (no channel binding; PgBouncer offers
``SCRAM-SHA-256`` without ``-PLUS`` unless TLS is on). Example::

    >>> md5_password("secret", "app", b"\\x01\\x02\\x03\\x04")
    'md5...'  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRAM_MECHANISM = "SCRAM-SHA-256"


class AuthError(ValueError):
    """The server's authentication messages did not check out."""


def md5_password(password: str, user: str, salt: bytes) -> str:
    """The ``PasswordMessage`` body for ``AuthenticationMD5Password``."""
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


class ScramClient:
    """One SCRAM-SHA-256 exchange (RFC 5802 / 7677), client side."""

    def __init__(self, password: str) -> None:
        self._password = password.encode()
        self._nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self._first_bare = f"n=,r={self._nonce}"
        self._server_signature = b""

    def first_message(self) -> bytes:
        """client-first-message (no channel binding)."""
        return f"n,,{self._first_bare}".encode()

    def final_message(self, server_first: bytes) -> bytes:
        """client-final-message for the server-first-message ``server_first``."""
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(","))
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or not salt or not iterations.isdigit():
            raise AuthError("the server's SCRAM challenge is malformed")
        salted = hashlib.pbkdf2_hmac(
            "sha256", self._password, base64.b64decode(salt), int(iterations)
        )
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self._server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        """Check the server's signature (it proves the server knew the password too)."""
        text = server_final.decode()
        if not text.startswith("v="):
            raise AuthError("the server's SCRAM final message is malformed")
        if not hmac.compare_digest(base64.b64decode(text[2:]), self._server_signature):
            raise AuthError("the server's SCRAM signature does not match")
