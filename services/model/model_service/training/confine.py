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
taken, the training does not start. Nor does it run unisolated unless the operator opted out:
when the spec requires isolation (an uploaded script, `SANDBOX_REQUIRE_ISOLATION=true`) and the
mount, network and PID namespaces cannot be entered (a container that refuses `unshare`), nothing
of the script runs and the status says what is missing and which setting to change.

Ending: SIGTERM (from the trainer at a deadline or a cancel, or as the death signal when the
trainer dies) makes this process kill the training and everything it started, then exit. With
a PID namespace, killing its PID 1 is enough: the kernel kills the rest. Without one (the
built-in recipe where namespaces are refused, or the opt-out), this process is a child
subreaper: whatever the training started, even in a session of its own, is re-parented here and
killed before this process exits.
"""
from __future__ import annotations

import json
import os
import pwd
import resource
import select
import signal
import sys
import time
import traceback
from pathlib import Path

from . import namespaces

EXIT_CONFINE_FAILED = 70
EXIT_NOT_ISOLATED = 71
EXIT_STOPPED = 72
CPU_KILL_GRACE_S = 5
REAP_POLL_S = 0.05


class Stopped(Exception):
    """The trainer asked for the training to end now (SIGTERM)."""


def _on_stop(_signum, _frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough: the clean-up must not be interrupted
    raise Stopped()


def _isolate(report: list[str]) -> str | None:
    """Enters new mount, network, PID and IPC namespaces (all or none); None when they were
    entered, else why they could not be."""
    flags = namespaces.CLONE_NEWNS | namespaces.CLONE_NEWNET | namespaces.CLONE_NEWPID | namespaces.CLONE_NEWIPC
    uid, gid = os.getuid(), os.getgid()
    try:
        namespaces.unshare(flags if uid == 0 else flags | namespaces.CLONE_NEWUSER)
    except OSError as exc:
        report.append(f"namespaces: unavailable ({exc.strerror}); the network and other data are not isolated here")
        return exc.strerror
    if uid != 0:
        namespaces.map_own_ids(uid, gid)  # in the new user namespace: a failure here stops the sandbox
    report.append("network: none (a network namespace without interfaces)")
    report.append("processes: a PID namespace of their own (every process ends with the training)")
    return None


def refusal(missing: str, namespaces_enabled: bool) -> str:
    """Why an uploaded script was not run, and what the server's operator can change."""
    fix = ("let the trainer create Linux namespaces (run it as root, or allow it unprivileged user namespaces)"
           if namespaces_enabled else "set SANDBOX_NAMESPACES=true")
    return (f"the training script was not run: uploaded scripts run only isolated from the server (network, mount and "
            f"PID namespaces) and this trainer cannot isolate them ({missing}). The server's operator can {fix}, or set "
            "SANDBOX_REQUIRE_ISOLATION=false to run scripts without isolation (unsafe: they get the trainer's network and files)")


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
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
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


def _children() -> list[int]:
    """This process's children, read from /proc (the host's: only used without a PID namespace)."""
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stream:
                stat = stream.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (name) ": state, ppid, ...; the name may hold anything
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry.name))
    return found


def _end_descendants() -> None:
    """Kills and reaps every process under this subreaper: its children, then their children as
    they are re-parented here, until none is left."""
    while True:
        for pid in _children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(REAP_POLL_S)


def _stop(child: int, isolated: bool) -> None:
    """Ends the training now, and every process it started."""
    os.kill(child, signal.SIGKILL)
    if isolated:
        os.waitpid(child, 0)  # PID 1 of its namespace: the kernel kills the rest with it
    else:
        _end_descendants()


def confine(spec: dict) -> int:
    signal.signal(signal.SIGTERM, _on_stop)
    namespaces.prctl(namespaces.PR_SET_PDEATHSIG, signal.SIGTERM)  # the trainer died: end the training
    if os.getppid() != spec["parent_pid"]:
        return EXIT_CONFINE_FAILED  # the trainer died before prctl took effect
    os.umask(0o022)
    status_fd = int(spec["status_fd"])
    os.set_inheritable(status_fd, False)
    report: list[str] = []
    user = _target_user(spec)
    workdir = Path(spec["workdir"])
    _prepare_workdir(workdir, user)
    if spec["isolate"]:
        missing = _isolate(report)
    else:
        missing = "namespaces are turned off: SANDBOX_NAMESPACES=false"
        report.append("namespaces: not used (SANDBOX_NAMESPACES=false)")
    isolated = missing is None
    if isolated:
        _hide(spec, report, other_user=user is not None)
    report += [_describe_user(user), _describe_limits(spec["limits"])]
    if not isolated and spec["require_isolation"]:
        report.append("refused: the script needs isolation (SANDBOX_REQUIRE_ISOLATION=true)")
        _write_status(status_fd, {"isolation": report, "refused": refusal(missing, spec["isolate"])})
        return EXIT_NOT_ISOLATED
    _write_status(status_fd, {"isolation": report})
    if not isolated:
        namespaces.prctl(namespaces.PR_SET_CHILD_SUBREAPER, 1)  # what the training leaves is re-parented here
    watch_read, watch_write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(watch_write)
        _run_child(spec, user, isolated, watch_read)
    os.close(watch_read)
    try:
        _, wait_status, usage = os.wait4(child, 0)
    except Stopped:
        _stop(child, isolated)
        return EXIT_STOPPED
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finishing anyway; the trainer kills the group if this takes long
    if not isolated:
        _end_descendants()
    _write_status(status_fd, {
        "exit_code": os.waitstatus_to_exitcode(wait_status),
        "cpu_s": usage.ru_utime + usage.ru_stime,
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
