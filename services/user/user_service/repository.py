"""MongoDB access for the user service's own `users` collection."""
from __future__ import annotations


import pymongo
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from mlstudio.common import errors, mongo


class UserRepository:
    def __init__(self, db: Database):
        self.db = db
        self.users = db.users

    def ensure_indexes(self) -> None:
        mongo.declare_indexes(self.users, [pymongo.IndexModel([("username", 1)], unique=True, name="username_unique")])

    def create(self, username: str, email: str, password_hash: str) -> dict:
        doc = {
            "_id": mongo.next_id(self.db, "users"),
            "username": username,
            "email": email,
            "password_hash": password_hash,
            "create_time": mongo.utc_now(),
        }
        try:
            self.users.insert_one(doc)
        except DuplicateKeyError:
            raise errors.AlreadyExists(f"username {username!r} is taken", code="username_taken") from None
        except PyMongoError as exc:
            raise mongo.unavailable(exc) from exc
        return doc

    def by_username(self, username: str) -> dict | None:
        try:
            return self.users.find_one({"username": username})
        except PyMongoError as exc:
            raise mongo.unavailable(exc) from exc

    def by_id(self, user_id: int) -> dict | None:
        try:
            return self.users.find_one({"_id": user_id})
        except PyMongoError as exc:
            raise mongo.unavailable(exc) from exc

    def update_password_hash(self, user_id: int, password_hash: str) -> None:
        try:
            self.users.update_one({"_id": user_id}, {"$set": {"password_hash": password_hash}})
        except PyMongoError as exc:
            raise mongo.unavailable(exc) from exc
