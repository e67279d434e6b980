"""Executors: run one function over a list of tasks, on local processes or on a Ray cluster.

Both return results in task order, so a pipeline gives the same output on either. Task
functions are module-level and their arguments picklable (spawned processes and Ray
workers import them by name).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator

from tqdm import tqdm

from lmforge.errors import DataError


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="shard", disable=not progress, leave=False)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while inside, so a terminated driver still stops its workers.

    Only the main thread can set signal handlers; elsewhere SIGTERM keeps its handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_sigterm(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)  # None: set outside Python


def _stop(pool: ProcessPoolExecutor) -> None:
    """Kill the workers and cancel the tasks not yet started: `shutdown` alone would let each
    running task finish, and a killed driver would leave them behind."""
    for worker in list((pool._processes or {}).values()):  # the executor offers no public handle on them
        worker.terminate()
    pool.shutdown(wait=True, cancel_futures=True)  # returns once the executor has reaped its workers


class LocalExecutor:
    """Processes on this machine (spawned, so no thread state is inherited); one worker runs inline.

    A map that fails or is interrupted (Ctrl-C, SIGTERM, a task's error) stops every worker before it re-raises."""

    def __init__(self, workers: int):
        self.workers = workers

    def map(self, fn: Callable[[Any], Any], tasks: list, desc: str = "", progress: bool = False) -> list:
        results: list = [None] * len(tasks)
        with _bar(len(tasks), desc, progress) as bar:
            if self.workers == 1 or len(tasks) <= 1:
                for i, task in enumerate(tasks):
                    results[i] = fn(task)
                    bar.update()
                return results
            context = multiprocessing.get_context("spawn")
            with _sigterm_raises(), ProcessPoolExecutor(min(self.workers, len(tasks)), mp_context=context) as pool:
                try:
                    futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
                    for future in as_completed(futures):
                        results[futures[future]] = future.result()
                        bar.update()
                except BaseException:
                    _stop(pool)
                    raise
        return results

    def close(self) -> None:
        pass


class RayExecutor:
    """Ray tasks: on a local Ray started here (address "") or on a running cluster ("auto",
    "ray://HOST:10001"). Each task asks for one CPU."""

    def __init__(self, workers: int, address: str = ""):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
        except ImportError:
            raise DataError("run.executor='ray' needs Ray: pip install 'lmforge[ray]'") from None
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)

    def map(self, fn: Callable[[Any], Any], tasks: list, desc: str = "", progress: bool = False) -> list:
        remote = self.ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(task) for task in tasks]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(tasks)
        pending = list(refs)
        with _bar(len(tasks), desc, progress) as bar:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                results[index[done[0]]] = self.ray.get(done[0])
                bar.update()
        return results

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(kind: str, workers: int, address: str = ""):
    """The executor a pipeline's [run] section names."""
    return RayExecutor(workers, address) if kind == "ray" else LocalExecutor(workers)
