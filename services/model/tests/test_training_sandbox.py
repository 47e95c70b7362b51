"""The training sandbox with real child processes and small scripts (no TensorFlow): how each kind
of failure is reported, the limits (the disk quota included), the environment without
credentials, and the confinement (network, nothing of the host but the job and Python, an
unprivileged user, no process left behind).

These tests need bubblewrap and a machine where it can make its namespaces (root, or unprivileged
user namespaces allowed), and assert that it did. Where bwrap is missing or refused, an uploaded
script is refused: that is tested with a bwrap that is not there, and one that fails as bwrap
does where namespaces are refused. The pytest temporary directories are under /tmp, so every
run here has its working directory under /tmp (where the sandbox has a /tmp of its own).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from model_service.training import sandbox as sandbox_mod
from model_service.training.job import remove_tree
from model_service.training.sandbox import Confinement, Limits, LogTail, Sandbox, Training

SECRETS = {"MONGO_URI": "mongodb://admin:hunter2@db:27017", "STORAGE_URL": "s3://key:topsecret@minio:9000/bucket",
           "MEDIA_SIGNING_KEY": "signing-secret", "JWT_PRIVATE_KEY_FILE": "/secrets/jwt.pem", "AWS_SECRET_ACCESS_KEY": "aws-secret"}


class Run:
    """One sandboxed run of `source`, with what it reported."""

    def __init__(self, tmp_path: Path, source: str, *, limits: Limits | None = None, check=lambda: None, params=None,
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
        sandbox = Sandbox(limits or Limits(wall_s=60, cpu_s=60, memory_bytes=1 << 30), confinement or Confinement())
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
    ("import os, signal\ndef train(data_dir, output_dir, params):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
     "killed", "the training process was killed by SIGKILL"),  # bwrap passes it on as 128 + 9
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
    assert set(environment) - {"PWD"} <= set(sandbox_mod.child_env(run.workdir)), environment  # bwrap's --chdir sets PWD
    everything = run.log.text()
    for value in SECRETS.values():
        assert value not in everything
    assert environment["HOME"] == "/job" and environment["TMPDIR"] == "/tmp"  # the working directory, inside bubblewrap


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


HOSTILE = """
    import json, os, socket, sys

    def attempt(action):
        try:
            return action()
        except Exception as exc:
            return type(exc).__name__

    def train(data_dir, output_dir, params):
        listings = {{}}
        for path in {paths!r}:
            listings[path] = attempt(lambda: sorted(os.listdir(path)))
        print("listings=" + json.dumps(listings))
        print("secret=" + json.dumps(attempt(lambda: open({secret!r}).read())))
        print("network=" + json.dumps(attempt(lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2).close())))
        print("interfaces=" + json.dumps([name for _, name in socket.if_nameindex()]))
        print("data_writable=" + json.dumps(attempt(lambda: open(os.path.join(data_dir, "new"), "w").close())))
        print("root_writable=" + json.dumps(attempt(lambda: open("/planted", "w").close())))
        print("python_writable=" + json.dumps(attempt(lambda: open(os.path.join(sys.prefix, "planted"), "w").close())))
        print("uid=" + json.dumps(os.getuid()))
        print("pids=" + json.dumps(sorted(int(p) for p in os.listdir("/proc") if p.isdigit())))
        open(os.path.join(output_dir, "model.keras"), "w").write("m")
"""


def test_a_hostile_script_sees_only_its_job_and_python(tmp_path):
    """Nothing of the host but the job's working directory and Python (read-only): no other
    checkout, no data of the stack (here, a directory next to the job's under /tmp), no network."""
    checkout = Path(__file__).resolve().parents[3]
    secret_dir = tmp_path / "stack-data"
    secret_dir.mkdir()
    (secret_dir / "credentials").write_text("password")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    paths = ["/", "/tmp", "/root", "/home", "/var", "/srv", "/opt", "/mnt", "/etc", "/sys", "/sys/class/net",
             str(checkout), str(checkout.parent), str(checkout.parents[1]), str(tmp_path), str(secret_dir), "/job"]
    source = HOSTILE.format(paths=paths, secret=str(secret_dir / "credentials"), port=listener.getsockname()[1])
    with listener:
        run = Run(tmp_path, source)
    assert run.outcome.ok, run.log.text()
    assert run.isolated, run.outcome.isolation
    listings = run.printed("listings")
    # its own /tmp: not the host's (where the checkout lies under /tmp, only the way to its Python, checked below)
    assert listings["/tmp"] == [] or str(checkout).startswith("/tmp/")
    assert listings["/job"] == ["data", "output", "runner.json", "tmp", "train.py"]
    assert set(listings["/"]) <= {"bin", "dev", "etc", "job", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr",
                                  *(Path(p).parts[1] for p in sandbox_mod.readable_paths())}, listings["/"]
    assert set(listings["/etc"]) <= {"ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "fonts"}
    for path in ["/home", "/var", "/srv", "/opt", "/mnt", "/sys", "/sys/class/net", str(tmp_path), str(secret_dir)]:
        assert listings[path] == "FileNotFoundError", (path, listings[path])
    # what is above Python shows only the way to it: no other checkout, none of this one but the runner's package
    for path in {"/root", "/tmp", str(checkout.parents[1]), str(checkout.parent), str(checkout)} - {"/"}:  # "/": checked above
        visible = listings[path]
        assert visible == "FileNotFoundError" or all(any(str(Path(path) / name) == r or r.startswith(str(Path(path) / name) + "/")
                                                         for r in sandbox_mod.readable_paths()) for name in visible), (path, visible)
    assert run.printed("secret") == "FileNotFoundError"
    assert run.printed("network") in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert run.printed("interfaces") == ["lo"]  # a loopback of its own: none of the host's interfaces
    assert run.printed("data_writable") in ("OSError", "PermissionError")  # the dataset is read-only
    assert run.printed("root_writable") in ("OSError", "PermissionError")
    assert run.printed("python_writable") in ("OSError", "PermissionError")
    assert run.printed("pids") == [1, 2]  # bubblewrap's PID 1 and the runner: none of the host's processes
    if os.getuid() == 0:
        assert run.printed("uid") != 0 and "user: nobody (unprivileged)" in run.outcome.isolation


def test_a_script_that_fills_the_disk_is_stopped_at_its_quota(tmp_path):
    source = """
        import os
        def train(data_dir, output_dir, params):
            chunk = b"x" * (1 << 20)
            with open("/tmp/filler", "wb") as out:  # the sandbox's /tmp counts too
                for _ in range(4096):
                    out.write(chunk)
                    out.flush()
    """
    run = Run(tmp_path, source, limits=Limits(wall_s=60, cpu_s=60, memory_bytes=1 << 30, disk_bytes=64 << 20))
    assert (run.outcome.reason, run.outcome.error) == ("disk", "the training wrote more than 64 MB (TRAINING_DISK_QUOTA_MB) and was stopped")


def test_many_empty_files_count_against_the_quota(tmp_path):
    source = """
        import os
        def train(data_dir, output_dir, params):
            for i in range(10 ** 7):
                open(os.path.join(output_dir, str(i)), "w").close()
    """
    run = Run(tmp_path, source, limits=Limits(wall_s=60, cpu_s=60, memory_bytes=1 << 30, disk_bytes=8 << 20))
    assert run.outcome.reason == "disk", run.log.text()


@pytest.fixture
def deep_tmp_path(tmp_path):
    """tmp_path for a tree too deep for pytest's own clean-up (shutil.rmtree recurses and fails
    on it, which would break a later test run's removal of old temporary folders)."""
    yield tmp_path
    remove_tree(tmp_path)


def test_folders_nested_too_deep_stop_the_training(deep_tmp_path):
    """Past PATH_MAX or Python's recursion limit, a walk by paths (or shutil.rmtree) would miss
    or choke on them."""
    source = """
        import os, time
        def train(data_dir, output_dir, params):
            os.chdir(output_dir)
            for _ in range(5000):
                os.mkdir("d" * 200)
                os.chdir("d" * 200)
            time.sleep(100)
    """
    run = Run(deep_tmp_path, source)
    assert (run.outcome.reason, run.outcome.error) == ("disk", f"the training made folders nested more than {sandbox_mod.MAX_DEPTH} deep and was stopped")


def test_the_disk_walk_counts_what_lies_past_path_max(tmp_path):
    folder = tmp_path
    os.mkdir(folder / "data")
    (folder / "data" / "dataset").write_bytes(b"x" * (1 << 20))  # the dataset: not counted
    fd = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(sandbox_mod.MAX_DEPTH - 1):  # 63 levels of 200 characters: past PATH_MAX
            os.mkdir("d" * 200, dir_fd=fd)
            child = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("big", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as out:
            out.write(b"x" * (1 << 20))
    finally:
        os.close(fd)
    used = sandbox_mod.disk_usage(folder)
    assert (1 << 20) < used < (1 << 20) + 80 * sandbox_mod.DISK_ENTRY_BYTES


RAN = """
import os
def train(data_dir, output_dir, params):
    print("the script ran", flush=True)
    open(os.path.join(output_dir, "model.keras"), "w").write("m")
"""

# What bwrap says, and does, where the platform refuses it namespaces (a container without user
# namespaces, or one whose seccomp profile blocks them).
REFUSING_BWRAP = """#!/bin/sh
echo "bwrap: No permissions to create new namespace, likely because the kernel does not allow non-privileged user namespaces." >&2
exit 1
"""


@pytest.fixture
def refusing_bwrap(tmp_path):
    path = tmp_path / "bin" / "bwrap"
    path.parent.mkdir()
    path.write_text(REFUSING_BWRAP)
    path.chmod(0o755)
    return str(path)


def test_an_uploaded_script_is_refused_where_bwrap_cannot_make_namespaces(tmp_path, refusing_bwrap):
    run = Run(tmp_path, RAN, confinement=Confinement(bwrap=refusing_bwrap))
    assert (run.outcome.ok, run.outcome.reason) == (False, "not_isolated")
    assert run.outcome.error.startswith("the training script was not run: uploaded scripts run only isolated from the server "
                                        "(network, mount and PID namespaces) and this trainer cannot isolate them "
                                        "(No permissions to create new namespace, likely because the kernel does not allow "
                                        "non-privileged user namespaces.)")
    assert "SANDBOX_REQUIRE_ISOLATION=false" in run.outcome.error
    assert "the script ran" not in run.log.text() and not (run.workdir / "output" / "model.keras").exists()
    assert any(line.startswith("namespaces: unavailable (No permissions to create new namespace") for line in run.outcome.isolation)


def test_an_uploaded_script_is_refused_where_bwrap_is_missing(tmp_path):
    run = Run(tmp_path, RAN, confinement=Confinement(bwrap=str(tmp_path / "no-such-bwrap")))
    assert run.outcome.reason == "not_isolated"
    assert "(bubblewrap (bwrap) is not installed)" in run.outcome.error and "install bubblewrap" in run.outcome.error
    assert "the script ran" not in run.log.text()


def test_an_uploaded_script_is_refused_where_namespaces_are_turned_off(tmp_path):
    run = Run(tmp_path, RAN, confinement=Confinement(isolate=False))
    assert run.outcome.reason == "not_isolated"
    assert "(namespaces are turned off: SANDBOX_NAMESPACES=false)" in run.outcome.error and "set SANDBOX_NAMESPACES=true" in run.outcome.error
    assert "the script ran" not in run.log.text()


def test_without_bwrap_the_built_in_recipe_still_runs(tmp_path, refusing_bwrap):
    run = Run(tmp_path, RAN, confinement=Confinement(user=None, bwrap=refusing_bwrap), trusted=True)
    assert run.outcome.ok, run.log.text()
    assert "the script ran" in run.log.text() and not run.isolated
    assert any(line.startswith("namespaces: unavailable") for line in run.outcome.isolation)


@pytest.mark.parametrize("require_isolation, trusted, required", [(True, False, True), (False, False, False), (True, True, False)])
def test_isolation_is_required_of_uploaded_scripts_unless_opted_out(tmp_path, require_isolation, trusted, required):
    spec = tmp_path / "confine.json"
    sandbox = Sandbox(Limits(), Confinement(require_isolation=require_isolation))
    sandbox._write_confine_spec(spec, Training(tmp_path, tmp_path / "train.py", {}, trusted), 3)
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


def test_python_under_tmp_is_reached_though_the_sandbox_has_its_own_tmp(tmp_path):
    """A checkout (and its virtual environment) under /tmp: bound on top of the sandbox's /tmp."""
    venv = tmp_path / "checkout" / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    job_dir = tmp_path / "job"
    job_dir.mkdir(mode=0o711)
    workdir = job_dir / "work"
    (workdir / "data").mkdir(parents=True)
    os.chmod(workdir / "data", 0o755)
    script = workdir / "train.py"
    script.write_text("import os, sys\ndef train(d, o, p):\n    print('prefix=' + sys.prefix)\n"
                      "    open(os.path.join(o, 'model.keras'), 'w').write('m')\n")
    os.chmod(script, 0o644)
    log = LogTail(1 << 20)
    python = str(venv / "bin" / "python")
    outcome = Sandbox(Limits(wall_s=60, cpu_s=60, memory_bytes=1 << 30), Confinement(), python=python).run(
        Training(workdir, script, {}), log, lambda *event: None, lambda: None)
    assert outcome.ok and any(line.startswith("network: none") for line in outcome.isolation), log.text()
    assert f"prefix={venv}" in log.text()
