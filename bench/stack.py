"""The stack a benchmark run measures, and an account on it.

The stack is started exactly as the integration tests start theirs (`deploy/local/managed_stack.py`'s
`Stack`: the real launcher on free ports with its own data directory), with authentication on,
so requests take the production path through Envoy's JWT check. `BenchStack` adds what the
scenarios need besides the gateway: the services' own ports (to measure around the gateway),
their process ids (to watch memory) and where the object store lives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mlstudio.common import storage

from deploy.local.managed_stack import Api, Stack

MODEL_READY_TIMEOUT_S = 300.0
UPLOAD_TIMEOUT_S = 600.0


class BenchStack:
    def __init__(self, data_dir: Path, **env: str):
        self.stack = Stack(data_dir, **{"AUTH_REQUIRED": "true", **env})

    def start(self) -> BenchStack:
        self.stack.start()
        return self

    def stop(self) -> None:
        self.stack.stop()

    @property
    def url(self) -> str:
        return self.stack.url

    @property
    def gateway_port(self) -> int:
        return int(self.stack.ports["GATEWAY_PORT"])

    def http_port(self, service: str) -> int:
        return int(self.stack.ports[f"{service.upper()}_HTTP_PORT"])

    def grpc_address(self, service: str) -> str:
        return f"127.0.0.1:{self.stack.ports[f'{service.upper()}_GRPC_PORT']}"

    @property
    def mongo_port(self) -> int:
        return int(self.stack.ports["MONGO_PORT"])

    def pids(self) -> dict[str, int]:
        """The stack's processes (names as in the launcher's registry) and their pids."""
        return {name: int(pid) for name, pid in (self.stack.state() or {}).get("processes", {}).items()}

    def pid(self, process: str) -> int:
        return self.pids()[process]

    @property
    def storage_url(self) -> str:
        """Where the services keep their objects: STORAGE_URL when set (an S3 server), else the
        launcher's local directory (as deploy/local/config.py decides)."""
        return self.stack.env.get("STORAGE_URL") or f"file://{self.stack.data_dir.resolve() / 'objects'}"

    def object_store(self) -> storage.ObjectStore:
        """The storage backend the services write to."""
        return storage.open_store(self.storage_url)

    def log_tail(self) -> str:
        return self.stack.log_tail()


@dataclass
class Account:
    """A registered user of the stack, with a gateway session that carries their token."""

    user_id: int
    token: str
    session: Api

    @classmethod
    def register(cls, stack: BenchStack, username: str, password: str = "benchmark password") -> Account:
        session = Api(stack.url)
        created = session.post(
            "/users/", json={"username": username, "password": password, "email": f"{username}@example.com"}
        )
        _expect(created, 200, 201)
        login = session.post("/users/auth/", json={"username": username, "password": password})
        _expect(login, 200)
        body = login.json()
        return cls(int(body["user_id"]), body["token"], Api(stack.url, body["token"]))

    @property
    def verified_payload(self) -> str:
        """The `x-jwt-payload` header Envoy would forward for this token (its payload segment),
        for requests that go straight to a service."""
        return self.token.split(".")[1]

    def new_project(self, project_type: str, title: str) -> int:
        created = self.session.post(
            "/projects/all",
            params={"user_id": self.user_id},
            json={"title": title, "description": "benchmark", "type": project_type},
        )
        _expect(created, 200, 201)
        return int(created.json()["id"])

    def upload_model(self, project_id: int, model_file: Path, label_file: Path, project_type: str, title: str) -> int:
        """Registers a Keras model through the gateway and waits until it is served."""
        files = [
            ("files", (model_file.name, model_file.read_bytes())),
            ("files", (label_file.name, label_file.read_bytes())),
        ]
        response = self.session.post(
            "/models/all",
            params={"user_id": self.user_id, "project_id": project_id, "method": "upload"},
            files=files,
            data={"title": title, "description": "benchmark", "type": project_type},
            timeout=UPLOAD_TIMEOUT_S,
        )
        _expect(response, 200, 201)
        model_id = int(response.json()["id"])
        deadline = time.monotonic() + MODEL_READY_TIMEOUT_S
        while (status := self.session.get(f"/models/{model_id}").json()["status"]) != "Trained":
            if status == "Failed" or time.monotonic() > deadline:
                raise RuntimeError(f"model {model_id} was not served (status {status})")
            time.sleep(0.5)
        return model_id


def _expect(response, *statuses: int) -> None:
    if response.status_code not in statuses:
        raise RuntimeError(
            f"{response.request.method} {response.url} answered {response.status_code}: {response.text[:500]}"
        )
