"""Where a batch's model jobs run: the executor settings, declared once, and the local executor.

``local`` (the default) runs each model job on one of ``--jobs`` threads of this process; each job does its work in
child processes (:mod:`tflq.measure.isolation`), and records every step in the manifest at once. ``ray`` runs each
model job as a Ray task (:mod:`tflq.batch.ray_executor`, the only module that imports Ray, lazily): the task converts
and measures on a worker and returns plain dicts; this process records them in the manifest as they come in. Both
give the same rows, gates, reports and exit codes. Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from tflq import options as opts
from tflq.errors import UsageError

if TYPE_CHECKING:
    from tflq.batch.jobs import JobResult

EXECUTORS = ("local", "ray")
Plan = TypeVar("Plan")


@dataclass(frozen=True)
class ExecutorOptions:
    """How ``tflq run`` spreads its model jobs (command line only: where a batch runs is not part of the batch)."""

    executor: str = opts.setting(
        "local",
        opts.Choice(EXECUTORS),
        "Where the model jobs run: local (threads here, each job in child processes) or ray (one Ray task per model "
        "job, on a local or an existing Ray cluster; docs/cluster.md)",
        flag="--executor",
        yaml=None,
    )
    address: str | None = opts.setting(
        None,
        opts.Text(optional=True, metavar="ADDRESS"),
        "With --executor ray: join this running Ray cluster (HOST:PORT, ray://HOST:PORT or auto) instead of starting "
        "a local one on 127.0.0.1 for the run",
        flag="--address",
        yaml=None,
        shown_default="a local cluster",
    )
    cpus: float = opts.setting(
        1.0,
        opts.Number(0, open_min=True),
        "With --executor ray: CPUs each model job reserves on the cluster",
        flag="--ray-cpus",
        yaml=None,
    )
    training_gpus: float = opts.setting(
        0.0,
        opts.Number(0),
        "With --executor ray: GPUs a model job with a training mode (qat) reserves",
        flag="--ray-training-gpus",
        yaml=None,
    )
    retries: int = opts.setting(
        2,
        opts.NonNegativeInt(),
        "With --executor ray: how many times a model job whose worker died (killed, out of memory, node lost) is "
        "retried before it becomes that job's error rows",
        flag="--ray-retries",
        yaml=None,
    )

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor: expected one of {', '.join(EXECUTORS)}, found {self.executor!r}")
        if self.executor != "ray":
            given = [
                str(item.setting.flag)
                for item in opts.declared(ExecutorOptions)
                if item.name != "executor" and getattr(self, item.name) != item.default
            ]
            if given:
                raise UsageError(f"{', '.join(given)}: only with --executor ray (the run is local)")


def run_local(plans: Sequence[Plan], jobs: int, run: Callable[[Plan], list[JobResult]]) -> list[list[JobResult]]:
    """``run`` each plan on ``jobs`` threads; results in plan order.

    Ctrl-C (KeyboardInterrupt in this, the main thread) is acted on at once: every child process is killed, the
    worker threads stop at their next step (their child calls raise KeyboardInterrupt), and KeyboardInterrupt goes
    on up. What finished before is already in the manifest.
    """
    from tflq.measure import isolation

    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(run, plan) for plan in plans]
    try:
        while True:  # short waits: the main thread stays responsive to SIGINT
            done, running = wait(futures, timeout=0.25, return_when=FIRST_EXCEPTION)
            if not running or any(future.exception() is not None for future in done):
                break
        return [future.result() for future in futures]
    except BaseException:
        isolation.stop_children()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        isolation.allow_children()
