"""The sandbox's first process (`python -m model_service.training.confine <spec.json>`): runs the
training (`script_runner`) inside bubblewrap (`bwrap`) and reports how it ended.

Started by the trainer (`sandbox.py`) with an environment that holds no credentials, it applies
what the platform allows, and says what it applied:

- bubblewrap, the sandbox Flatpak uses (a well-kept tool rather than a mount planner of our
  own; the command is built by `mlstudio.common.bubblewrap`, as the model exporter's): a new,
  empty root in which only what the training needs is bound at its own path, the Python
  installation, the runner's package and the shared library's read-only, the job's working directory
  read-write (its dataset read-only), the working directory's `tmp/` as `/tmp` and `/dev/shm`
  (so the disk quota the trainer watches covers everything it can write), a fresh `/proc` (the
  container's, read-only, where its runtime refuses a new one) and a minimal `/dev`; nothing else
  of the host (no other checkout, no data of the stack, no `/sys`).
  New network (no interfaces but a loopback of its own), PID, IPC, UTS and cgroup namespaces; a
  new session; it dies with this process (`--die-with-parent`), and the PID namespace takes every
  process the script started with it. As root, bwrap runs privileged (no user namespace) and
  the runner drops to the unprivileged user before anything of the script runs; otherwise
  bwrap uses an unprivileged user namespace (which some container runtimes refuse);
- resource limits, set here before bwrap starts and inherited by everything in it: CPU time
  (RLIMIT_CPU: SIGXCPU, then SIGKILL 5 s later), memory (RLIMIT_DATA: RLIMIT_AS would count
  TensorFlow's large virtual reservations and break it, RLIMIT_DATA counts what is really
  allocated), processes/threads (RLIMIT_NPROC), file size (RLIMIT_FSIZE), open files, no core
  dumps;
- privileges: started as root, the training runs as an unprivileged user (`nobody` by
  default), since RLIMIT_NPROC does not bind root and root could undo every other limit.

Untrusted code never runs as root: if the spec asks for an unprivileged user and it cannot be
taken, the training does not start. Nor does it run unisolated unless the operator opted out:
when the spec requires isolation (an uploaded script, `SANDBOX_REQUIRE_ISOLATION=true`) and
bwrap is missing or cannot create its namespaces (a container that refuses them), nothing of
the script runs and the status says what is missing and which setting to change.

Ending: SIGTERM (from the trainer at a deadline or a cancel, or as the death signal when the
trainer dies) makes this process kill the training and everything it started, then exit. In
bwrap, killing bwrap is enough: its PID 1 dies with it, and the kernel kills the rest of the PID
namespace. Without bwrap (the built-in recipe where namespaces are refused, or the opt-out),
this process is a child subreaper: whatever the training started, even in a session of its own,
is re-parented here and killed before this process exits.
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

from mlstudio.common import bubblewrap

EXIT_CONFINE_FAILED = 70
EXIT_NOT_ISOLATED = 71
EXIT_STOPPED = 72
CPU_KILL_GRACE_S = 5
REAP_POLL_S = 0.05
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
# Where the job's working directory is inside bubblewrap: a fixed path, apart from any host path
# (the working directory may be under /tmp, where the sandbox has a /tmp of its own).
JOB_DIR = "/job"

prctl = bubblewrap.prctl


class Stopped(Exception):
    """The trainer asked for the training to end now (SIGTERM)."""


def _on_stop(_signum, _frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough: the clean-up must not be interrupted
    raise Stopped()


# ----- bubblewrap (the command itself: mlstudio.common.bubblewrap, shared with the model exporter)

namespace_flags = bubblewrap.namespace_flags


def inside_env(env: dict[str, str], workdir: Path) -> dict[str, str]:
    """The environment as seen inside bubblewrap: the working directory at JOB_DIR, /tmp its tmp/."""
    prefix = str(workdir)
    inside = {name: JOB_DIR + value[len(prefix):] if value == prefix or value.startswith(prefix + "/") else value
              for name, value in env.items()}
    return {**inside, "TMPDIR": "/tmp"}


def bwrap_command(bwrap: str, *, workdir: Path, readable, env: dict[str, str], command: list[str], privileged: bool,
                  info_fd: int | None = None) -> list[str]:
    """The bwrap command line that runs `command` in the working directory (at JOB_DIR, its
    dataset read-only, its tmp/ as /tmp and /dev/shm) with nothing of the host but the system's
    /usr and `readable` (read-only, at their own paths).
    `info_fd`: where bwrap writes the host PID of the sandbox's PID 1 (see `_stop`)."""
    return bubblewrap.command(
        bwrap, privileged=privileged, env=inside_env(env, workdir), readable=readable, tmp=workdir / "tmp",
        binds=[bubblewrap.Bind(workdir, JOB_DIR, writable=True), bubblewrap.Bind(workdir / "data", f"{JOB_DIR}/data")],
        shm=workdir / "tmp", chdir=JOB_DIR, argv=command, info_fd=info_fd)


def _probe(bwrap: str, privileged: bool) -> str | None:
    """None when bwrap can make its namespaces here, else why not (its own words)."""
    return bubblewrap.probe(bwrap, privileged)


def refusal(missing: str, namespaces_enabled: bool) -> str:
    """Why an uploaded script was not run, and what the server's operator can change."""
    fix = ("install bubblewrap (bwrap) and let the trainer create Linux namespaces (run it as root, or allow it "
           "unprivileged user namespaces)" if namespaces_enabled else "set SANDBOX_NAMESPACES=true")
    return (f"the training script was not run: uploaded scripts run only isolated from the server (network, mount and "
            f"PID namespaces) and this trainer cannot isolate them ({missing}). The server's operator can {fix}, or set "
            "SANDBOX_REQUIRE_ISOLATION=false to run scripts without isolation (unsafe: they get the trainer's network and files)")


# ----- limits and the user

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


def drop_privileges(uid: int | None, gid: int | None, required: bool) -> None:
    """Becomes `uid`/`gid` for good; refuses to go on as root if `required`. Called before
    anything untrusted runs: here without bwrap, in the runner inside it."""
    bubblewrap.drop_privileges(uid, gid, required, hint="set SANDBOX_USER to an unprivileged user")


def _parent_alive(watch_fd: int) -> bool:
    readable, _, _ = select.select([watch_fd], [], [], 0)
    return not readable  # EOF: the confining parent died


def _runner(spec: dict) -> list[str]:
    # -P: the working directory (the script's, writable by it) is not put on sys.path. The
    # runner's spec is named relative to the working directory, which is its current directory.
    return [spec["python"], "-s", "-P", "-m", "model_service.training.script_runner", "runner.json"]


def _run_child(spec: dict, user, isolated: bool, watch_fd: int, info_fd: int | None) -> None:
    """The training's process: limits, then bwrap (or, without it, the user and the runner). Never returns."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if not _parent_alive(watch_fd):
            os._exit(EXIT_CONFINE_FAILED)
        _limit(spec["limits"])
        os.chdir(spec["workdir"])
        env = dict(os.environ)
        if isolated:
            # As root, bwrap runs privileged and the runner takes the user (its spec says which)
            os.set_inheritable(info_fd, True)
            command = bwrap_command(spec["bwrap"], workdir=Path(spec["workdir"]), readable=spec["readable"], env=env,
                                    command=_runner(spec), privileged=os.getuid() == 0, info_fd=info_fd)
            os.execve(command[0], command, env)
        drop_privileges(user.pw_uid if user else None, user.pw_gid if user else None, spec["require_unprivileged"])
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the uid change
        command = _runner(spec)
        os.execve(command[0], command, env)
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


def _sandbox_pid(info_fd: int) -> int | None:
    """The host PID of the sandbox's PID 1, once bwrap has said it (None before)."""
    readable, _, _ = select.select([info_fd], [], [], 0)
    if not readable:
        return None
    try:
        return int(json.loads(os.read(info_fd, 65536))["child-pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stop(child: int, isolated: bool, info_fd: int | None) -> None:
    """Ends the training now, and every process it started. In bubblewrap, its PID 1 is killed
    rather than bwrap: the kernel kills the rest of the PID namespace before that PID 1's death is
    reported to bwrap, and bwrap exits after it, so once bwrap is reaped here nothing of the
    training is left (killing bwrap first would return while they are still being killed)."""
    sandbox_pid = _sandbox_pid(info_fd) if isolated and info_fd is not None else None
    os.kill(sandbox_pid or child, signal.SIGKILL)
    if isolated:
        os.waitpid(child, 0)
    else:
        _end_descendants()


def _exit_code(wait_status: int, isolated: bool) -> int:
    """The runner's exit code; negative for a signal. bwrap passes a signalled child's death on as
    128 + the signal."""
    code = os.waitstatus_to_exitcode(wait_status)
    if isolated and 128 < code < 128 + signal.NSIG:
        return -(code - 128)
    return code


def confine(spec: dict) -> int:
    signal.signal(signal.SIGTERM, _on_stop)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the trainer died: end the training
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
        privileged = os.getuid() == 0
        missing = _probe(spec["bwrap"], privileged=privileged)
        if missing is None:
            report += ["network: none (bubblewrap: a network namespace of its own, without the host's interfaces)",
                       "processes: a PID namespace of their own (every process ends with the training)",
                       "/proc: the sandbox's own" if bubblewrap.fresh_proc(spec["bwrap"], privileged) else
                       "/proc: the container's, read-only (its runtime refuses a new one): its processes are listed, "
                       "their environment and memory cannot be read",
                       *([] if privileged or bubblewrap.nested_userns_blocked(spec["bwrap"]) else
                         ["user namespaces: the script may nest its own (this runtime's /proc/sys is read-only); "
                          "they hold nothing beyond the sandbox"]),
                       "files: only this job's working directory (dataset read-only) and Python, read-only; a private /tmp"]
        else:
            report.append(f"namespaces: unavailable ({missing}); the network and other data are not isolated here")
    else:
        missing = "namespaces are turned off: SANDBOX_NAMESPACES=false"
        report.append("namespaces: not used (SANDBOX_NAMESPACES=false)")
    isolated = missing is None
    report += [_describe_user(user), _describe_limits(spec["limits"])]
    if not isolated and spec["require_isolation"]:
        report.append("refused: the script needs isolation (SANDBOX_REQUIRE_ISOLATION=true)")
        _write_status(status_fd, {"isolation": report, "refused": refusal(missing, spec["isolate"])})
        return EXIT_NOT_ISOLATED
    _write_status(status_fd, {"isolation": report})
    if not isolated:
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # what the training leaves is re-parented here
    watch_read, watch_write = os.pipe()
    info_read, info_write = os.pipe() if isolated else (None, None)
    child = os.fork()
    if child == 0:
        os.close(watch_write)
        if info_read is not None:
            os.close(info_read)
        _run_child(spec, user, isolated, watch_read, info_write)
    os.close(watch_read)
    if info_write is not None:
        os.close(info_write)
    try:
        _, wait_status, usage = os.wait4(child, 0)
    except Stopped:
        _stop(child, isolated, info_read)
        return EXIT_STOPPED
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finishing anyway; the trainer kills the group if this takes long
    if not isolated:
        _end_descendants()
    _write_status(status_fd, {
        "exit_code": _exit_code(wait_status, isolated),
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
