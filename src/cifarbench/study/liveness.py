"""Heartbeats of running sweep trials, and the reaping of trials whose worker died.

A RUNNING trial whose worker died would stay RUNNING forever. So each running trial sends a heartbeat:
Optuna's own on RDB storages (it compares database time, so machines' clocks do not matter), a
``heartbeat`` user attr on the journal, which has none. Any worker, when it starts and before each
claim, fails the trials silent for longer than ``grace_period`` and re-queues them as WAITING with the
same params (Optuna's RetryHeartbeatStaleTrialCallback). A trial whose worker ran on this machine and
has exited is reaped at once, without waiting for the grace period: a study killed with SIGKILL
resumes immediately when it is rerun.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

from cifarbench import log
from cifarbench.study.storage import optuna_module as _optuna, retry_callback


class Liveness:
    """Heartbeats and reaping for one storage (see the module docstring)."""

    def __init__(self, storage, grace_period: int, max_retry: int | None):
        optuna = _optuna()
        self.storage = storage
        self.rdb = isinstance(storage, optuna.storages.RDBStorage)
        self.grace = grace_period
        self.retry = retry_callback(max_retry)

    def beat(self, trial) -> None:
        if self.rdb:
            self.storage.record_heartbeat(trial._trial_id)
        else:
            # With the trial's number: a re-queued trial inherits its dead predecessor's user attrs,
            # and that old heartbeat must not make the new trial look stale.
            self.storage.set_trial_user_attr(trial._trial_id, "heartbeat", [trial.number, time.time()])

    def claimed(self, trial) -> None:
        """First beat, and who runs the trial, as soon as it is claimed (before other workers look at it)."""
        self.beat(trial)
        me = _process_identity()
        if me:
            self.storage.set_trial_user_attr(trial._trial_id, "worker", [me, os.getpid(), trial.number])

    def _last_beat(self, t) -> float:
        hb = t.user_attrs.get("heartbeat")
        if isinstance(hb, list) and len(hb) == 2 and hb[0] == t.number:
            return float(hb[1])
        return t.datetime_start.timestamp() if t.datetime_start else time.time()  # died before its first beat

    def reap(self, study) -> None:
        """Fail and re-queue the trials of dead workers: silent for grace_period, or gone from this machine."""
        optuna = _optuna()
        if self.rdb:
            optuna.storages.fail_stale_trials(study)  # fails them and runs the re-queueing callback
        now, me = time.time(), _process_identity()
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            w = t.user_attrs.get("worker")
            if me and isinstance(w, list) and len(w) == 3 and w[0] == me and w[2] == t.number and not _pid_alive(w[1]):
                why = f"its worker (pid {w[1]}) on this machine has exited"  # no need to wait for the grace period
            elif not self.rdb and now - self._last_beat(t) > self.grace:
                why = f"no heartbeat for {now - self._last_beat(t):.0f} s"
            else:
                continue
            try:
                if self.storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                    log.warn(f"{study.study_name}: trial {t.number}: {why}; re-queued")
                    self.retry(study, self.storage.get_trial(t._trial_id))
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker reaped it first

    @contextlib.contextmanager
    def running(self, trial, interval: float):
        """Beat every ``interval`` seconds until the block ends (the first beat came with the claim)."""
        stop = threading.Event()

        def loop():
            while not stop.wait(interval):
                try:
                    self.beat(trial)
                except Exception as e:  # a missed beat is harmless; the grace period covers several
                    log.warn(f"heartbeat of trial {trial.number} failed: {type(e).__name__}")

        thread = threading.Thread(target=loop, name=f"heartbeat-{trial.number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _process_identity() -> str | None:
    """Names this machine's process table: host, boot and PID namespace (Linux), or None elsewhere.

    Two processes with the same identity see the same PIDs, so one can tell whether the other still
    runs. Containers sharing a hostname differ in their PID namespace; a reboot changes the boot id.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{socket.gethostname()}:{boot}:{pidns}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists (another user's), or not a PID we can judge: assume alive
    return True
