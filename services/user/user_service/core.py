"""Registration, login and token issuing; knows nothing about HTTP or gRPC."""
from __future__ import annotations

import re
import time

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mlstudio.common import errors

from .keys import SigningKey

_USERNAME = re.compile(r"^[A-Za-z0-9_.@+\-]{1,150}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_PASSWORD = 1024


def public_user(doc: dict) -> dict:
    return {"id": doc["_id"], "username": doc["username"], "email": doc.get("email", "")}


class UserCore:
    def __init__(self, repository, signing_key: SigningKey, *, issuer: str, token_ttl_s: int, hasher: PasswordHasher | None = None):
        self.repository = repository
        self.signing_key = signing_key
        self.issuer = issuer
        self.token_ttl_s = token_ttl_s
        self.hasher = hasher or PasswordHasher()

    def register(self, username, password, email) -> dict:
        username = _text("username", username).strip()
        password = _text("password", password)
        email = _text("email", email, required=False).strip()
        if not _USERNAME.match(username):
            raise errors.InvalidArgument("username must be 1-150 letters, digits or @ . + - _")
        if not password or len(password) > MAX_PASSWORD:
            raise errors.InvalidArgument(f"password must be 1-{MAX_PASSWORD} characters")
        if email and not _EMAIL.match(email):
            raise errors.InvalidArgument(f"email {email!r} is not an email address")
        if self.repository.by_username(username) is not None:
            raise errors.AlreadyExists(f"username {username!r} is taken", code="username_taken")
        return public_user(self.repository.create(username, email, self.hasher.hash(password)))

    def login(self, username, password) -> dict:
        username = _text("username", username).strip()
        password = _text("password", password)
        user = self.repository.by_username(username)
        if user is None:
            self.hasher.hash(password)  # same cost as a wrong password, so timing tells nothing
            raise errors.Unauthenticated("wrong username or password", code="bad_credentials")
        try:
            self.hasher.verify(user["password_hash"], password)
        except (VerificationError, InvalidHashError):
            raise errors.Unauthenticated("wrong username or password", code="bad_credentials") from None
        if self.hasher.check_needs_rehash(user["password_hash"]):
            self.repository.update_password_hash(user["_id"], self.hasher.hash(password))
        return {"token": self.issue_token(user), "user_id": user["_id"], "username": user["username"]}

    def issue_token(self, user: dict, now: float | None = None) -> str:
        now = int(time.time() if now is None else now)
        claims = {"iss": self.issuer, "sub": str(user["_id"]), "username": user["username"], "iat": now, "exp": now + self.token_ttl_s}
        return jwt.encode(claims, self.signing_key.private_pem, algorithm="RS256", headers={"kid": self.signing_key.kid})

    def get_user(self, user_id: int) -> dict:
        user = self.repository.by_id(user_id)
        if user is None:
            raise errors.NotFound(f"user {user_id} not found")
        return public_user(user)


def _text(name: str, value, *, required: bool = True) -> str:
    if value is None:
        if required:
            raise errors.InvalidArgument(f"field {name} is required")
        return ""
    if not isinstance(value, str):
        raise errors.InvalidArgument(f"field {name} must be a string")
    return value
