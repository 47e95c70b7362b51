"""The sandbox's first process (`python -m model_service.training.confine <spec.json>`): confines
itself, then runs the training (`script_runner`) as PID 1 of a new PID namespace and reports how
it ended.

Started by the trainer (`sandbox.py`) with an environment that holds no credentials, it applies
what the platform allows, and says what it applied:

- namespaces: a network namespace with no interfaces (no network), a mount namespace in which
  the trainer's data, the stack's data, object storage and TF Serving's repository are hidden
  except this job's working directory, private /tmp and /dev/shm, and a PID namespace whose
  death takes every process the script started with it (nothing outlives the sandbox). As root
  this needs nothing more; otherwise an unprivileged user namespace is tried;
- resource limits on the training process: CPU time (RLIMIT_CPU: SIGXCPU, then SIGKILL 5 s
  later), memory (RLIMIT_DATA: RLIMIT_AS would count TensorFlow's large virtual reservations
  and break it, RLIMIT_DATA counts what is really allocated), processes/threads (RLIMIT_NPROC),
  file size (RLIMIT_FSIZE), open files, no core dumps;
- privileges: started as root, the training runs as an unprivileged user (`nobody` by
  default), since RLIMIT_NPROC does not bind root and root could undo every other limit.

Untrusted code never runs as root: if the spec asks for an unprivileged user and it cannot be
taken, the training does not start.
"""
from __future__ import annotations

import json
import os
import pwd
import resource
import select
import signal
import sys
import traceback
from pathlib import Path

from . import namespaces

EXIT_CONFINE_FAILED = 70
CPU_KILL_GRACE_S = 5


def _isolate(report: list[str]) -> bool:
    """Enters new namespaces; True when a mount namespace (and so a PID namespace) was made."""
    flags = namespaces.CLONE_NEWNS | namespaces.CLONE_NEWNET | namespaces.CLONE_NEWPID | namespaces.CLONE_NEWIPC
    uid, gid = os.getuid(), os.getgid()
    try:
        namespaces.unshare(flags if uid == 0 else flags | namespaces.CLONE_NEWUSER)
    except OSError as exc:
        report.append(f"namespaces: unavailable ({exc.strerror}); the network and other data are not isolated here")
        return False
    if uid != 0:
        namespaces.map_own_ids(uid, gid)  # in the new user namespace: a failure here stops the sandbox
    report.append("network: none (a network namespace without interfaces)")
    return True


def _hide(spec: dict, report: list[str], other_user: bool) -> None:
    namespaces.make_mounts_private()
    needed = [spec["workdir"], *spec["readable"]]
    masks = namespaces.plan_masks(spec["hide"], spec["scratch"], needed, other_user=other_user)
    for mask in masks:
        namespaces.apply_mask(mask)
    report.append("files: only this job's working directory among the service's data; private /tmp")


def _limit(limits: dict) -> None:
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + CPU_KILL_GRACE_S))
    resource.setrlimit(resource.RLIMIT_DATA, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _describe_limits(limits: dict) -> str:
    return (f"limits: {int(limits['cpu_s'])} s of CPU, {limits['memory_bytes'] >> 20} MiB of memory, "
            f"{limits['processes']} processes and threads, {limits['file_bytes'] >> 20} MiB per file")


def _target_user(spec: dict) -> pwd.struct_passwd | None:
    """The user to run as when started as root (None: stay as is)."""
    if os.getuid() != 0 or not spec.get("user"):
        return None
    return pwd.getpwnam(spec["user"])


def _prepare_workdir(workdir: Path, user: pwd.struct_passwd | None) -> None:
    """The working directory, its output and temporary folders belong to the training's user."""
    if user is None:
        return
    for path in (workdir, workdir / "output", workdir / "tmp"):
        os.chown(path, user.pw_uid, user.pw_gid)


def _describe_user(user: pwd.struct_passwd | None) -> str:
    if user is not None:
        return f"user: {user.pw_name} (unprivileged)"
    return "user: root (trusted code only)" if os.getuid() == 0 else f"user: uid {os.getuid()} (unprivileged)"


def _drop_privileges(user: pwd.struct_passwd | None, required: bool) -> None:
    """Becomes `user` for good (root cannot be regained); refuses to go on as root if `required`."""
    if user is not None:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
        try:
            os.setuid(0)
        except OSError:
            pass
        else:
            raise PermissionError("root privileges could not be dropped")
    if required and (os.getuid() == 0 or os.geteuid() == 0):
        raise PermissionError("refusing to run untrusted code as root: set SANDBOX_USER to an unprivileged user")


def _parent_alive(watch_fd: int) -> bool:
    readable, _, _ = select.select([watch_fd], [], [], 0)
    return not readable  # EOF: the confining parent died


def _run_child(spec: dict, user, isolated: bool, watch_fd: int) -> None:
    """PID 1 of the new namespace: last preparations, then the training runner. Never returns."""
    try:
        namespaces.prctl(namespaces.PR_SET_PDEATHSIG, signal.SIGKILL)
        if not _parent_alive(watch_fd):
            os._exit(EXIT_CONFINE_FAILED)
        if isolated:
            try:
                namespaces.mount_proc()
            except OSError:
                pass  # the old /proc stays: other users' processes keep their environment private
        _limit(spec["limits"])
        _drop_privileges(user, spec["require_unprivileged"])
        namespaces.prctl(namespaces.PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the uid change
        os.chdir(spec["workdir"])
        python = spec["python"]
        os.execve(python, [python, "-s", "-m", "model_service.training.script_runner", spec["runner_spec"]], dict(os.environ))
    except BaseException:  # noqa: BLE001 - anything here means the sandbox is not safe to run
        sys.stderr.write("the training sandbox could not be set up:\n" + traceback.format_exc())
        sys.stderr.flush()
        os._exit(EXIT_CONFINE_FAILED)


def _write_status(status_fd: int, status: dict) -> None:
    """One JSON line to the trainer: the isolation applied (at once, so that it is known even if
    the run is killed), then how the run ended."""
    os.write(status_fd, (json.dumps(status) + "\n").encode())


def confine(spec: dict) -> int:
    namespaces.prctl(namespaces.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != spec["parent_pid"]:
        return EXIT_CONFINE_FAILED  # the trainer died before prctl took effect
    os.umask(0o022)
    status_fd = int(spec["status_fd"])
    os.set_inheritable(status_fd, False)
    report: list[str] = []
    user = _target_user(spec)
    workdir = Path(spec["workdir"])
    _prepare_workdir(workdir, user)
    isolated = _isolate(report) if spec["isolate"] else False
    if not spec["isolate"]:
        report.append("namespaces: not used (SANDBOX_NAMESPACES=false)")
    if isolated:
        _hide(spec, report, other_user=user is not None)
    report += [_describe_user(user), _describe_limits(spec["limits"])]
    _write_status(status_fd, {"isolation": report})
    watch_read, watch_write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(watch_write)
        _run_child(spec, user, isolated, watch_read)
    os.close(watch_read)
    _, wait_status, usage = os.wait4(child, 0)
    _write_status(status_fd, {
        "exit_code": os.waitstatus_to_exitcode(wait_status),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_mib": usage.ru_maxrss / 1024,
    })
    return 0


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        code = confine(spec)
    except BaseException:  # noqa: BLE001 - reported in the training's log, then the job fails
        sys.stderr.write("the training sandbox could not be set up:\n" + traceback.format_exc())
        code = EXIT_CONFINE_FAILED
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
