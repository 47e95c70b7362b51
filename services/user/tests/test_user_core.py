"""Registration and login rules, with an in-memory repository."""
import jwt
import pytest
from argon2 import PasswordHasher

from mlstudio.common import errors
from user_service import keys
from user_service.core import UserCore


class FakeRepository:
    def __init__(self):
        self.users = {}

    def create(self, username, email, password_hash):
        doc = {"_id": len(self.users) + 1, "username": username, "email": email, "password_hash": password_hash}
        self.users[doc["_id"]] = doc
        return doc

    def by_username(self, username):
        return next((u for u in self.users.values() if u["username"] == username), None)

    def by_id(self, user_id):
        return self.users.get(user_id)

    def update_password_hash(self, user_id, password_hash):
        self.users[user_id]["password_hash"] = password_hash


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    return keys.load_or_create(tmp_path_factory.mktemp("keys") / "key.pem")


@pytest.fixture
def core(signing_key):
    fast = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    return UserCore(FakeRepository(), signing_key, issuer="mlstudio", token_ttl_s=60, hasher=fast)


def test_register_then_login_gives_a_verifiable_token(core, signing_key):
    user = core.register("ann", "secret", "ann@example.com")
    assert user == {"id": 1, "username": "ann", "email": "ann@example.com"}
    assert core.repository.users[1]["password_hash"] != "secret"
    login = core.login("ann", "secret")
    assert login["user_id"] == 1 and login["username"] == "ann"
    public = jwt.PyJWK(signing_key.jwks["keys"][0]).key
    claims = jwt.decode(login["token"], public, algorithms=["RS256"], issuer="mlstudio")
    assert claims["sub"] == "1" and claims["exp"] - claims["iat"] == 60
    assert jwt.get_unverified_header(login["token"])["kid"] == signing_key.kid


def test_taken_username_conflicts(core):
    core.register("ann", "secret", "")
    with pytest.raises(errors.AlreadyExists):
        core.register("ann", "other", "")


@pytest.mark.parametrize("username,password,email", [
    ("", "pw", ""), ("has space", "pw", ""), ("x" * 151, "pw", ""), ("ann", "", ""),
    ("ann", "pw", "not-an-email"), (None, "pw", ""), ("ann", 12, ""),
])
def test_bad_registrations_are_refused(core, username, password, email):
    with pytest.raises(errors.InvalidArgument):
        core.register(username, password, email)


def test_wrong_password_and_unknown_user_are_the_same_401(core):
    core.register("ann", "secret", "")
    with pytest.raises(errors.Unauthenticated) as wrong:
        core.login("ann", "nope")
    with pytest.raises(errors.Unauthenticated) as unknown:
        core.login("bob", "secret")
    assert wrong.value.message == unknown.value.message


def test_signing_key_is_kept_across_starts(tmp_path):
    first = keys.load_or_create(tmp_path / "k.pem")
    second = keys.load_or_create(tmp_path / "k.pem")
    assert first.kid == second.kid and first.jwks == second.jwks
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
