"""The launcher's supervisor: a child that exits is started again after a delay that doubles
with each exit in a row (capped) and starts over after a long enough run; each exit is logged
with its code; stopping leaves nothing running."""
import logging
import sys
import threading
import time

from deploy.local.processes import ProcessSpec, RestartPolicy, Supervisor, pid_alive

CRASHES = ProcessSpec(name="crasher", argv=(sys.executable, "-c", "import sys; sys.exit(3)"))


def test_restart_delays_double_up_to_the_cap():
    policy = RestartPolicy(first_delay_s=1, max_delay_s=8, reset_after_s=60)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


def supervised(policy: RestartPolicy, restarts_wanted: int) -> tuple[list[dict], Supervisor]:
    """Runs CRASHES under a supervisor until it was restarted `restarts_wanted` times."""
    stop = threading.Event()
    supervisor = Supervisor(stop, policy)
    supervisor.start(CRASHES)
    restarts: list[dict] = []
    thread = threading.Thread(target=supervisor.supervise, kwargs={"on_restart": restarts.append, "poll_s": 0.01})
    thread.start()
    try:
        give_up = time.monotonic() + 120  # a bound against a hang, not an expectation
        while len(restarts) < restarts_wanted and time.monotonic() < give_up:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
        supervisor.stop_all()
    return restarts, supervisor


def test_a_child_that_exits_is_restarted_with_growing_delays_and_logged(caplog):
    caplog.set_level(logging.INFO, logger="launcher")
    restarts, supervisor = supervised(RestartPolicy(first_delay_s=0.01, max_delay_s=0.02, reset_after_s=3600), 3)
    assert len(restarts) == 3
    assert len({pids["crasher"] for pids in restarts}) == 3  # a new process each time
    assert "crasher (pid" in caplog.text and "exited with code 3" in caplog.text
    assert "restarting it in 0.01 s (exit 1 in a row)" in caplog.text
    assert "restarting it in 0.02 s (exit 2 in a row)" in caplog.text
    assert "restarting it in 0.02 s (exit 3 in a row)" in caplog.text  # capped
    assert supervisor.pids == {} and not any(pid_alive(pids["crasher"]) for pids in restarts)


def test_a_run_that_lasted_starts_the_delays_over(caplog):
    caplog.set_level(logging.INFO, logger="launcher")
    supervised(RestartPolicy(first_delay_s=0.01, max_delay_s=1, reset_after_s=0), 3)
    assert "exit 1 in a row" in caplog.text and "exit 2 in a row" not in caplog.text
