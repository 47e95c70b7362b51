"""MongoDB access for the user service's own `users` collection."""
from __future__ import annotations


import pymongo
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from mlstudio.common import errors, mongo


class UserRepository(mongo.Repository):
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

        def insert() -> None:
            try:
                self.users.insert_one(doc)
            except DuplicateKeyError:
                raise errors.AlreadyExists(f"username {username!r} is taken", code="username_taken") from None

        self._run(insert)
        return doc

    def by_username(self, username: str) -> dict | None:
        return self._run(lambda: self.users.find_one({"username": username}))

    def by_id(self, user_id: int) -> dict | None:
        return self._run(lambda: self.users.find_one({"_id": user_id}))

    def update_password_hash(self, user_id: int, password_hash: str) -> None:
        self._run(lambda: self.users.update_one({"_id": user_id}, {"$set": {"password_hash": password_hash}}))
