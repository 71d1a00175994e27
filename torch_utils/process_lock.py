"""Exclusive file locks that die with their process: the kernel drops them when the holder exits or is killed.

A `ProcessLock` takes `flock(LOCK_EX)` on an open file descriptor and writes who holds it (pid, host, command)
into the file, so a process that finds the lock busy can name the holder. Nothing is left to clean up after a
`kill -9`: the lock file may remain, but it no longer locks anything. Used for plugin builds (custom_ops) and
run directories (training_utils).

A flock belongs to the open file, which a forked child (a DataLoader worker, say) would share: the lock would then
outlive its holder for as long as such a child runs. So a forked child closes its copies of the held descriptors at
once (`os.register_at_fork`); the lock stays the parent's alone. Exec'd children never see them (O_CLOEXEC).

Example:
    >>> lock = ProcessLock("/tmp/run/.lock")
    >>> if not lock.try_acquire():
    ...     raise SystemExit(f"/tmp/run is in use by {lock.holder()}")
    >>> ...  # work
    >>> lock.release()
"""

import os
import socket
import sys
import time
import weakref

try:
    import fcntl
except ImportError:  # Windows: no flock; ProcessLock falls back to the filelock package there.
    fcntl = None

# ----------------------------------------------------------------------------

_held_locks = weakref.WeakSet()  # The ProcessLocks this process holds through a descriptor.


def _forget_held_locks_in_child() -> None:
    """Runs in a forked child: close the child's copies of the held descriptors (the parent keeps the locks)."""
    for lock in list(_held_locks):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            try:
                os.close(fd)  # Closing one of several descriptors of the file leaves the flock in place.
            except OSError:
                pass
    _held_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_held_locks_in_child)


def describe_this_process() -> str:
    """One line naming this process: 'pid 1234 on host (python train_lres.py --preset tiny ...)'."""
    command = " ".join(os.path.basename(arg) if i == 0 else arg for i, arg in enumerate(sys.argv))
    if len(command) > 200:
        command = command[:197] + "..."
    return f"pid {os.getpid()} on {socket.gethostname()} ({command or 'python'})"


class ProcessLock:
    """Exclusive lock on `path` held by this process until `release()` or until the process ends in any way."""

    def __init__(self, path: str):
        self.path = path  # Lock file; created if missing, never deleted (deleting would race with new holders).
        self._fd = None  # Open descriptor while held.
        self._fallback = None  # filelock.FileLock where fcntl is missing.

    @property
    def held(self) -> bool:
        return self._fd is not None or self._fallback is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; return False at once if another process (or descriptor) holds it."""
        if self.held:
            raise RuntimeError(f"ProcessLock({self.path!r}) is already held by this object")
        if fcntl is None:
            import filelock

            lock = filelock.FileLock(self.path)
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                return False
            self._fallback = lock
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # Not inherited by exec'd children (PEP 446).
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        # Record the holder for whoever finds the lock busy.
        os.ftruncate(fd, 0)
        os.pwrite(fd, (describe_this_process() + "\n").encode("utf-8", "replace"), 0)
        self._fd = fd
        _held_locks.add(self)
        return True

    def acquire(self, timeout: float | None = None, on_wait=None, poll_interval: float = 0.1) -> bool:
        """Take the lock, waiting up to `timeout` seconds (None: as long as it takes); return whether it was taken.

        `on_wait(holder)` is called once, with `holder()`, if the lock is busy at the first try.
        """
        start = time.monotonic()
        if self.try_acquire():
            return True
        if on_wait is not None:
            on_wait(self.holder())
        while timeout is None or time.monotonic() - start < timeout:
            time.sleep(poll_interval)
            if self.try_acquire():
                return True
        return False

    def holder(self) -> str:
        """Who holds (or last held) the lock, as written by the holder; 'unknown process' if that cannot be read."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            text = ""
        return text.splitlines()[0] if text else "unknown process"

    def release(self) -> None:
        """Drop the lock (a no-op when not held). The lock file stays, empty."""
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _held_locks.discard(self)
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass
