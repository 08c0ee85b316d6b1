"""Starting helper threads so that a thread the system cannot give memory never hangs the run.

Under a tight data limit (`ulimit -d`) a thread's stack can be made and its first Python frame then refused: the new
thread's bootstrap dies of MemoryError ("Exception ignored in thread started by: ... MemoryError" on stderr) and
CPython's `threading.Thread.start()` waits for it, without a timeout, forever (convert of a 4 KB file with 8 MiB of
room hung). `start_thread` starts one so that such a death is noticed, in a bounded wait, and said as False: every
caller has a way to do the thread's work on the calling thread instead (each helper thread only overlaps work).
"""

from __future__ import annotations

import _thread
import collections
import queue
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

# How long a thread may take to run its first line before it is given up: a thread starts in well under a
# millisecond, tens of milliseconds on a loaded machine; one that has not started by then does the work of none (its
# caller does it), and, started late, finds its work taken and returns (`start_thread`).
START_WAIT = 5.0
# How often the wait looks at whether the new thread's bootstrap died (said through sys.unraisablehook).
_POLL = 0.005


def start_thread(target: Callable[[], object], wait: float = START_WAIT) -> bool:
    """Run `target()` in a new thread (a daemon: the interpreter does not wait for it at exit); whether it runs.

    False where the system refused the thread: its stack ("can't start new thread"), or its bootstrap (a MemoryError
    before `target` was called, which CPython reports through sys.unraisablehook and which is kept off stderr here:
    the caller says what it does instead), or where it has not started within `wait` seconds. With False, `target`
    never runs: a thread that starts after its wait finds that it was given up and returns at once.

        >>> ran = []
        >>> start_thread(lambda: ran.append(1))
        True
    """
    claimed = _thread.allocate_lock()  # held by whichever comes first: the new thread, or the caller giving it up
    running = _thread.allocate_lock()
    running.acquire()

    def bootstrap() -> None:
        if claimed.acquire(blocking=False):
            running.release()
            target()

    # The bootstrap's MemoryError reaches sys.unraisablehook from a thread that has no memory for a Python frame: a
    # bound method of C (a deque's append, into room it already has) takes it where a Python function could not run.
    said: collections.deque[Any] = collections.deque(maxlen=8)
    hook = sys.unraisablehook
    sys.unraisablehook = said.append
    try:
        try:
            _thread.start_new_thread(bootstrap, ())
        except RuntimeError:  # "can't start new thread": no stack
            return False
        waited = 0.0
        while not running.acquire(timeout=_POLL):
            waited += _POLL
            if waited >= wait or any(getattr(item, "object", None) is bootstrap for item in said):
                if claimed.acquire(blocking=False):
                    return False  # given up: should it start after all, it returns at once
                running.acquire()  # it claimed its work just now: it runs
                break
        return True
    finally:
        sys.unraisablehook = hook
        for item in said:  # another thread's, said in the meantime: to the hook it was meant for
            if getattr(item, "object", None) is not bootstrap:
                hook(item)


class WorkerPool:
    """A few threads that run functions while the calling thread does other work (hashing while it writes).

    Each `submit` until there are `workers` starts one more (as `concurrent.futures.ThreadPoolExecutor` does); where
    none can be started (`start_thread` False: the memory for it was refused), the function runs at once on the
    calling thread and its Future is returned done. Unlike the executor, whose `submit` starts its threads with
    `Thread.start()` (which waits forever for a thread whose bootstrap died), it never hangs.
    """

    def __init__(self, workers: int) -> None:
        self._most = workers
        self._started = 0
        self._refused = False  # a worker could not be started: no other is tried
        # A queue of C (put and get run no Python frame, and take the work to whichever worker is free).
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = queue.SimpleQueue()

    def submit(self, function: Callable[..., T], *args: Any) -> Future[T]:
        """`function(*args)` in a worker, or here where no worker can be had; its Future."""
        future: Future[T] = Future()
        if not self._refused and self._started < self._most:
            if start_thread(self._worker):
                self._started += 1
            else:
                self._refused = True
        if self._started == 0:
            _run_into(future, function, args)
        else:
            self._work.put((future, function, args))
        return future

    def map(self, function: Callable[[Any], T], items: Iterable[Any]) -> Iterator[T]:
        """`function(item)` of each item, run in the workers, their results in order (each raised as it comes)."""
        futures = [self.submit(function, item) for item in items]
        return (future.result() for future in futures)

    def _worker(self) -> None:
        while True:
            future, function, args = self._work.get()
            _run_into(future, function, args)


def _run_into(future: Future[Any], function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Run `function(*args)`, its result or exception set on `future`."""
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = function(*args)
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future, as the executor does
        future.set_exception(exc)
    else:
        future.set_result(result)
