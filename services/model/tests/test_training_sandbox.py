"""The training sandbox with real child processes and small scripts (no TensorFlow): how each kind
of failure is reported, the limits, the environment without credentials, and the confinement
(network, hidden data, unprivileged user, no process left behind).

These tests need a machine where the sandbox can enter namespaces (root, or unprivileged user
namespaces allowed) and assert that it did. Where the platform refuses them, an uploaded script
is refused: that is tested by making `unshare` fail inside the sandbox's own processes.
"""
from __future__ import annotations

import json
import os
import socket
import textwrap
import uuid
from pathlib import Path

import pytest

from model_service.training import sandbox as sandbox_mod
from model_service.training.sandbox import Confinement, Limits, LogTail, Sandbox, Training

SECRETS = {"MONGO_URI": "mongodb://admin:hunter2@db:27017", "STORAGE_URL": "s3://key:topsecret@minio:9000/bucket",
           "MEDIA_SIGNING_KEY": "signing-secret", "JWT_PRIVATE_KEY_FILE": "/secrets/jwt.pem", "AWS_SECRET_ACCESS_KEY": "aws-secret"}


class Run:
    """One sandboxed run of `source`, with what it reported."""

    def __init__(self, tmp_path: Path, source: str, *, limits: Limits | None = None, hide=(), check=lambda: None, params=None,
                 confinement: Confinement | None = None, trusted: bool = False):
        job_dir = tmp_path / f"job-{uuid.uuid4().hex[:6]}"
        job_dir.mkdir(mode=0o711)
        self.workdir = job_dir / "work"
        self.workdir.mkdir()
        (self.workdir / "data" / "red").mkdir(parents=True)
        (self.workdir / "data" / "red" / "1.png").write_bytes(b"png")
        os.chmod(self.workdir / "data", 0o755)
        os.chmod(self.workdir / "data" / "red", 0o755)
        script = self.workdir / "train.py"
        script.write_text(textwrap.dedent(source))
        os.chmod(script, 0o644)
        self.progress: list[tuple[int, int, dict]] = []
        self.log = LogTail((limits or Limits()).log_bytes)
        sandbox = Sandbox(limits or Limits(wall_s=60, cpu_s=60, memory_bytes=1 << 30), confinement or Confinement(hide=tuple(hide)))
        self.outcome = sandbox.run(Training(self.workdir, script, params or {"epochs": 2}, trusted), self.log,
                                   lambda *event: self.progress.append(event), check)

    @property
    def isolated(self) -> bool:
        return any(line.startswith("network: none") for line in self.outcome.isolation)

    def printed(self, key: str):
        """The JSON value a script printed as `key=<json>`."""
        for line in self.log.text().splitlines():
            if line.startswith(key + "="):
                return json.loads(line.split("=", 1)[1])
        raise AssertionError(f"{key} not printed:\n{self.log.text()[-3000:]}")


GOOD = """
    import os
    def train(data_dir, output_dir, params):
        print("classes=" + __import__("json").dumps(sorted(os.listdir(data_dir))))
        for epoch in (1, 2):
            params["report"](epoch, params["epochs"], accuracy=epoch / 2, loss=1 / epoch, note="not a number")
        with open(os.path.join(output_dir, "model.keras"), "wb") as out:
            out.write(b"a model")
        return {"accuracy": 1.0, "val_accuracy": 0.75, "name": "dropped"}
"""


def test_a_good_script_reports_progress_and_its_model_is_collected(tmp_path):
    run = Run(tmp_path, GOOD)
    assert run.outcome.ok and run.outcome.error is None, run.log.text()
    assert run.progress == [(1, 2, {"accuracy": 0.5, "loss": 1.0}), (2, 2, {"accuracy": 1.0, "loss": 0.5})]
    assert run.outcome.metrics == {"accuracy": 1.0, "val_accuracy": 0.75}
    assert run.outcome.model.read_bytes() == b"a model" and run.outcome.model.parent == run.workdir.parent / "model"
    assert run.printed("classes") == ["red"]


@pytest.mark.parametrize("source, reason, message", [
    ("def train(data_dir, output_dir, params):\n    raise ValueError('the learning rate is too high')\n",
     "crash", "the training script failed: ValueError: the learning rate is too high"),
    ("def fit(data_dir, output_dir, params):\n    pass\n", "no_train", "the script defines no train(data_dir, output_dir, params) function"),
    ("def train(data_dir, output_dir, params):\n    return {'accuracy': 1.0}\n", "no_model", "the training wrote no model"),
    ("def train(data_dir, output_dir, params)\n    pass\n", "load", "the script could not be loaded: SyntaxError"),
    ("import sys\ndef train(data_dir, output_dir, params):\n    sys.exit(3)\n", "crash", "the training script failed: the script exited (code 3) before train returned"),
    ("def train(data_dir, output_dir, params):\n    import os\n    os.symlink('/etc/passwd', os.path.join(output_dir, 'model.keras'))\n",
     "bad_model", "the trained model cannot be used: model.keras cannot be read as a regular file"),
])
def test_each_failure_is_reported_with_what_went_wrong(tmp_path, source, reason, message):
    run = Run(tmp_path, source)
    assert (run.outcome.reason, run.outcome.ok) == (reason, False)
    assert run.outcome.error.startswith(message), run.outcome.error


def test_the_traceback_of_a_crash_is_in_the_log(tmp_path):
    run = Run(tmp_path, "def helper():\n    raise KeyError('missing column')\ndef train(d, o, p):\n    helper()\n")
    assert "Traceback" in run.log.text() and "in helper" in run.log.text() and "KeyError: 'missing column'" in run.log.text()


def _escaping(marker: str, *, then: str) -> str:
    """A script that starts a process in a session of its own (out of the sandbox's process
    group), then does `then`."""
    return f"""
        import os, subprocess, sys, time
        def train(data_dir, output_dir, params):
            # tries to outlive the sandbox; the marker is an argument, to find the process by
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"], start_new_session=True)
            print("started", flush=True)
            {then}
    """


def _survivors_killed(marker: str) -> list[int]:
    """The processes left with `marker` in their command line, killed (so a failing test leaks none)."""
    survivors = _processes_with(marker)
    for pid in survivors:
        os.kill(pid, 9)
    return survivors


def test_a_script_that_sleeps_forever_is_stopped_at_its_time_limit(tmp_path):
    marker = f"sleeper-{uuid.uuid4().hex}"
    run = Run(tmp_path, _escaping(marker, then="time.sleep(1000)"), limits=Limits(wall_s=3, cpu_s=60, memory_bytes=1 << 30))
    survivors = _survivors_killed(marker)
    assert run.outcome.reason == "time_limit"
    assert run.outcome.error == "the training ran past its time limit of 3 s and was stopped"
    assert "started" in run.log.text()
    assert run.isolated, run.outcome.isolation
    assert survivors == []  # its PID namespace died with it


# Without a mount namespace the script runs where its Python is reachable: as root (allowed for
# the built-in recipe only) where Python lives under /root, which `nobody` cannot enter.
UNISOLATED_ROOT = {"confinement": Confinement(user=None, isolate=False, require_isolation=False), "trusted": True}


@pytest.mark.parametrize("then, reason", [("time.sleep(1000)", "time_limit"), ("open(os.path.join(output_dir, 'model.keras'), 'w').write('m')", "done")],
                         ids=["at the time limit", "after a normal end"])
def test_without_namespaces_no_process_outlives_the_training_either(tmp_path, then, reason):
    """No PID namespace (the opt-out, or the recipe where namespaces are refused): the confining
    process is a subreaper and kills what the script left, at the time limit as after a normal end."""
    marker = f"escaper-{uuid.uuid4().hex}"
    run = Run(tmp_path, _escaping(marker, then=then), limits=Limits(wall_s=3, cpu_s=60, memory_bytes=1 << 30), **UNISOLATED_ROOT)
    survivors = _survivors_killed(marker)
    assert run.outcome.reason == reason, run.log.text()
    assert "started" in run.log.text() and not run.isolated
    assert survivors == []


def test_a_script_that_burns_cpu_is_stopped_at_its_cpu_limit(tmp_path):
    run = Run(tmp_path, "def train(d, o, p):\n    while True:\n        pass\n", limits=Limits(wall_s=60, cpu_s=2, memory_bytes=1 << 30))
    assert run.outcome.reason == "cpu_limit"
    assert run.outcome.error == "the training used more than its 2 s of CPU time and was stopped"


def test_memory_is_limited(tmp_path):
    source = "def train(d, o, p):\n    hog = bytearray(600 << 20)\n    hog[::4096] = b'x' * len(hog[::4096])\n"
    run = Run(tmp_path, source, limits=Limits(wall_s=60, cpu_s=60, memory_bytes=256 << 20))
    assert run.outcome.reason == "memory"
    assert run.outcome.error.startswith("the training ran out of memory (limit 256 MiB): MemoryError")


def test_the_script_sees_no_credentials(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    source = """
        import json, os
        def train(data_dir, output_dir, params):
            print("environment=" + json.dumps(dict(os.environ)))
    """
    run = Run(tmp_path, source)
    environment = run.printed("environment")
    assert set(environment) <= set(sandbox_mod.child_env(run.workdir)), environment
    everything = run.log.text()
    for value in SECRETS.values():
        assert value not in everything
    assert environment["HOME"] == str(run.workdir) and environment["TMPDIR"] == str(run.workdir / "tmp")


def test_the_log_keeps_only_its_last_part(tmp_path):
    run = Run(tmp_path, "def train(d, o, p):\n    for i in range(20000):\n        print(f'line {i:05d} ' + 'x' * 40)\n",
              limits=Limits(wall_s=60, cpu_s=60, memory_bytes=1 << 30, log_bytes=4096))
    text = run.log.text()
    assert text.startswith("[... ") and "earlier bytes of output left out" in text
    assert "line 19999" in text and "line 00000" not in text and len(text.encode()) < 4096 + 200


def test_a_check_that_raises_stops_the_run_at_once(tmp_path):
    class Cancelled(Exception):
        pass

    calls = []

    def check():
        calls.append(1)
        if len(calls) > 5:
            raise Cancelled()

    with pytest.raises(Cancelled):
        Run(tmp_path, "import time\ndef train(d, o, p):\n    time.sleep(1000)\n", check=check)


def test_confinement_network_user_and_hidden_data(tmp_path):
    secret_dir = tmp_path / "service-data"
    secret_dir.mkdir()
    (secret_dir / "credentials").write_text("password")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    source = f"""
        import json, os, socket
        def train(data_dir, output_dir, params):
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                print("network=" + json.dumps("connected"))
            except OSError as exc:
                print("network=" + json.dumps(str(exc)))
            print("secret_visible=" + json.dumps(os.path.exists("{secret_dir / 'credentials'}")))
            print("uid=" + json.dumps(os.getuid()))
            print("pids=" + json.dumps(sorted(int(p) for p in os.listdir("/proc") if p.isdigit())))
            open(os.path.join(output_dir, "model.keras"), "w").write("m")
    """
    with listener:
        run = Run(tmp_path, source, hide=[secret_dir])
    assert run.outcome.ok, run.log.text()
    assert run.isolated, run.outcome.isolation
    assert run.printed("network") != "connected"
    assert run.printed("secret_visible") is False
    assert run.printed("pids") == [1]
    if os.getuid() == 0:
        assert run.printed("uid") != 0 and "user: nobody (unprivileged)" in run.outcome.isolation


# Loaded by the sandbox's processes (through PYTHONPATH) before the sandbox itself: `unshare` is
# refused as a container without namespace privileges refuses it.
REFUSE_UNSHARE = """
import errno, os
from model_service.training import namespaces


def _refused(flags):
    raise OSError(errno.EPERM, "unshare: " + os.strerror(errno.EPERM))


namespaces.unshare = _refused
"""

RAN = """
import os
def train(data_dir, output_dir, params):
    print("the script ran", flush=True)
    open(os.path.join(output_dir, "model.keras"), "w").write("m")
"""


@pytest.fixture
def unshare_refused(tmp_path, monkeypatch):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(REFUSE_UNSHARE)
    real_env = sandbox_mod.child_env

    def env_with_hook(workdir):
        env = real_env(workdir)
        return {**env, "PYTHONPATH": os.pathsep.join([str(hooks), env["PYTHONPATH"]])}

    monkeypatch.setattr(sandbox_mod, "child_env", env_with_hook)


def test_an_uploaded_script_is_refused_where_namespaces_are_refused(tmp_path, unshare_refused):
    run = Run(tmp_path, RAN)
    assert (run.outcome.ok, run.outcome.reason) == (False, "not_isolated")
    assert run.outcome.error.startswith("the training script was not run: uploaded scripts run only isolated from the server "
                                        "(network, mount and PID namespaces) and this trainer cannot isolate them "
                                        "(unshare: Operation not permitted)")
    assert "SANDBOX_REQUIRE_ISOLATION=false" in run.outcome.error
    assert "the script ran" not in run.log.text() and not (run.workdir / "output" / "model.keras").exists()
    assert "namespaces: unavailable (unshare: Operation not permitted); the network and other data are not isolated here" in run.outcome.isolation


def test_an_uploaded_script_is_refused_where_namespaces_are_turned_off(tmp_path):
    run = Run(tmp_path, RAN, confinement=Confinement(isolate=False))
    assert run.outcome.reason == "not_isolated"
    assert "(namespaces are turned off: SANDBOX_NAMESPACES=false)" in run.outcome.error and "set SANDBOX_NAMESPACES=true" in run.outcome.error
    assert "the script ran" not in run.log.text()


def test_without_namespaces_the_built_in_recipe_still_runs(tmp_path, unshare_refused):
    run = Run(tmp_path, RAN, confinement=Confinement(user=None), trusted=True)
    assert run.outcome.ok, run.log.text()
    assert "the script ran" in run.log.text() and not run.isolated
    assert any(line.startswith("namespaces: unavailable") for line in run.outcome.isolation)


@pytest.mark.parametrize("require_isolation, trusted, required", [(True, False, True), (False, False, False), (True, True, False)])
def test_isolation_is_required_of_uploaded_scripts_unless_opted_out(tmp_path, require_isolation, trusted, required):
    spec = tmp_path / "confine.json"
    sandbox = Sandbox(Limits(), Confinement(require_isolation=require_isolation))
    sandbox._write_confine_spec(spec, Training(tmp_path, tmp_path / "train.py", {}, trusted), tmp_path / "runner.json", 3)
    assert json.loads(spec.read_text())["require_isolation"] is required


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
