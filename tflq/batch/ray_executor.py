"""``tflq run --executor ray``: each model job is one Ray task; the only module that imports Ray (lazily).

The unit is the model job, not the variant: a model's variants share one export and one calibration (the
conversion session), which a task per variant would redo for each (docs/cluster.md has the measurement).

A task runs :func:`tflq.batch.run.run_model` on a worker, unchanged, against a copy of the model's manifest entries
(:class:`_RecordingManifest`) that writes nothing and keeps the list of its updates. Its progress events stream to
this process through a ``ray.util.queue.Queue`` while it runs; the task returns plain dicts: the rows, those updates
and the ``tflq`` log records. This process, the one writer, applies the updates to the manifest as the tasks
finish, in whatever order and on whatever node they ran: each write is still one atomic replace under the output
folder's lock, and tasks touch disjoint entries (``model/variant``).

Shared state is files: the outputs, the manifest and the reports live in the output folder, which the workers write
(the ``.tflite`` files, atomically) and this process reads. On a cluster the output folder, the models and the data
must be visible at the same path on every node, and each node needs the same tflq, TensorFlow and LiteRT versions
(a worker with other versions refuses its task: its outputs would not match the cache keys).

A worker that dies (killed, out of memory, node lost) is retried ``--ray-retries`` times by Ray; after that the
job's rows are errors naming the cause, and the other jobs go on. Ctrl-C cancels every task (``force=True``: their
workers are killed) and shuts down the local cluster this run started; what finished before is in the manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from tflq.batch.executors import ExecutorOptions
from tflq.batch.gates import apply_gates
from tflq.batch.jobs import EventCallback, JobResult, _versions
from tflq.batch.manifest import Entry, Manifest
from tflq.batch.schema import ModelJob
from tflq.errors import TflqError, UsageError
from tflq.modes import Variant

log = logging.getLogger("tflq")

LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0" before Ray starts: a local node on 127.0.0.1 only
# Test hooks: the driver's TFLQ_TEST_* variables hold for the task on the worker too (the child-abort hook of
# tflq.measure.isolation, this one). TFLQ_TEST_KILL_RAY_WORKER="<model>[,<model>:<file>...]": the worker of that
# model's task kills itself (SIGKILL) at the start, every time, or (":<file>") only while <file> does not exist yet
# (it creates the file first: the first attempt dies, the retry runs).
TEST_HOOK_PREFIX = "TFLQ_TEST_"
KILL_HOOK_VARIABLE = "TFLQ_TEST_KILL_RAY_WORKER"



class _Plan(Protocol):
    """What this module reads of a :class:`tflq.batch.run._Plan` (which it does not import: run imports this)."""

    @property
    def job(self) -> ModelJob: ...
    @property
    def variants(self) -> tuple[Variant, ...]: ...
    @property
    def paths(self) -> dict[str, Path]: ...
    @property
    def convert(self) -> tuple[Variant, ...]: ...
    @property
    def measure(self) -> tuple[Variant, ...]: ...


RunModel = Callable[[Any, Path, Manifest, EventCallback], list[JobResult]]  # tflq.batch.run.run_model


# ---------------------------------------------------------------------------------------------------------------
# The worker's side


class _RecordingManifest(Manifest):
    """A model's manifest entries on a worker: read like the manifest, written nowhere; ``updates`` lists what the
    driver must apply, in order (``("record", key, entry)`` or ``("drop", key, None)``)."""

    def __init__(self, output_dir: Path, entries: dict[str, Entry]) -> None:
        super().__init__(output_dir, dict(entries))
        self.updates: list[tuple[str, str, Entry | None]] = []

    def record(self, key: str, entry: Entry) -> None:
        super().record(key, entry)
        self.updates.append(("record", key, entry))

    def drop(self, key: str) -> None:
        super().drop(key)
        self.updates.append(("drop", key, None))

    def _write(self) -> None:  # the driver writes
        pass


class _Records(logging.Handler):
    """The ``tflq`` records (INFO and above) of one task, to be logged again by the driver."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


def _kill_hook(model: str, hook: str | None) -> None:
    for item in (hook or "").split(","):
        name, _, marker = item.partition(":")
        if name != model:
            continue
        if marker:
            if os.path.exists(marker):
                return
            Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """``variables`` set in this worker for the block (the driver's test hooks), then removed again."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_job_in_worker(
    run_model: RunModel,
    plan: _Plan,
    output_dir: str,
    entries: dict[str, Entry],
    versions: dict[str, str],
    cwd: str,
    hooks: dict[str, str],
    live: Any = None,
) -> dict[str, Any]:
    """The task body: ``run_model`` (:func:`tflq.batch.run.run_model`) on this worker. Returns ``{"results",
    "updates", "events", "records"}`` (plain data), or ``{"refused": why}`` when this worker's versions differ from
    the driver's (its outputs would not match the cache keys). ``live``: a ``ray.util.queue.Queue`` the driver
    drains while the task runs; each progress event is put there as it happens (then ``events`` is empty), so the
    live view follows the job instead of replaying it at its end."""
    from tflq.batch.jobs import _notes
    from tflq.measure import isolation

    _kill_hook(plan.job.name, hooks.get(KILL_HOOK_VARIABLE))
    if os.path.isdir(cwd):  # relative paths (an -o given relative) mean what they meant to the driver
        os.chdir(cwd)
    found = _versions()
    if found != versions:
        differ = ", ".join(f"{k} {found.get(k)} (driver: {v})" for k, v in versions.items() if found.get(k) != v)
        return {"refused": f"the Ray worker on {os.uname().nodename} has other versions than the driver: {differ}"}
    manifest = _RecordingManifest(Path(output_dir), entries)
    events: list[tuple[str, str, str, str]] = []
    logger = logging.getLogger("tflq")
    records = _Records()
    saved_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(_notes)
    logger.addHandler(records)
    isolation.allow_children()
    try:
        with _environment(hooks):
            results = run_model(plan, Path(output_dir), manifest, _event_sink(events, live))
    finally:
        logger.removeHandler(records)
        logger.removeHandler(_notes)
        logger.setLevel(saved_level)
    return {
        "results": [dataclasses.asdict(result) for result in results],
        "updates": manifest.updates,
        "events": events,
        "records": records.records,
    }


def _event_sink(events: list[tuple[str, str, str, str]], live: Any) -> Any:
    """Where a task's progress events go: onto the driver's queue as they happen, or (no queue, or the queue's actor
    gone) into ``events``, which the driver replays when the task returns."""

    def sink(*event: str) -> None:
        if live is not None:
            try:
                live.put_nowait(event)
                return
            except Exception:  # the queue's actor is gone (driver stopping): keep the event for the result
                pass
        events.append(event)  # type: ignore[arg-type]

    return sink


# ---------------------------------------------------------------------------------------------------------------
# The driver's side


def loopback_nodes() -> list[str]:
    """The NodeManagerAddress of every live node of the connected cluster."""
    import ray

    return [str(node["NodeManagerAddress"]) for node in ray.nodes() if node.get("Alive")]


def start_local_cluster(num_cpus: int | None = None) -> None:
    """Start a local Ray cluster on 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, no dashboard) whose
    workers import the same tflq as this process. Raises UsageError when a node is not on loopback (Ray reads the
    variable when it is imported: import Ray only after this function, or with the variable set)."""
    os.environ[LOOPBACK_VARIABLE] = "0"
    import ray

    search_path = [os.getcwd() if entry == "" else entry for entry in sys.path]
    python_path = os.pathsep.join(dict.fromkeys(entry for entry in search_path if os.path.isdir(entry)))
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,  # the tasks' tflq records come back with their results
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
    )
    outside = [address for address in loopback_nodes() if address != "127.0.0.1"]
    if outside:
        ray.shutdown()
        raise UsageError(f"the local Ray cluster bound to {', '.join(outside)}, expected 127.0.0.1 only")


@contextlib.contextmanager
def _connected(options: ExecutorOptions, training: bool) -> Iterator[None]:
    """Connected to the cluster for the block: the one given by ``--address``, the one this process is already
    connected to, or a local one started (and shut down) here."""
    import ray

    if ray.is_initialized():  # this process's connection (a test's cluster, a Ray job's driver)
        connected = ray.get_runtime_context().gcs_address
        if options.address not in (None, "auto", connected):
            raise UsageError(f"--address {options.address}: this process is already connected to Ray at {connected}")
        yield
        return
    if options.address is not None:
        try:
            ray.init(address=options.address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise UsageError(f"--address {options.address}: cannot join the Ray cluster: {error}") from None
    else:
        start_local_cluster()
        try:
            _check_fits(options, ray.cluster_resources(), training)
        except UsageError:
            ray.shutdown()
            raise
    try:
        yield
    finally:
        ray.shutdown()


def _check_fits(options: ExecutorOptions, resources: dict[str, float], training: bool) -> None:
    """UsageError when a job asks for more than the local cluster has (its task would wait forever; a cluster with
    an autoscaler may add the nodes, so only the local one is checked). ``training``: a job trains (asks for
    ``--ray-training-gpus``)."""
    problems = []
    if options.cpus > resources.get("CPU", 0):
        problems.append(f"--ray-cpus {options.cpus:g}: the local Ray cluster has {resources.get('CPU', 0):g} CPU(s)")
    if training and options.training_gpus > resources.get("GPU", 0):
        problems.append(
            f"--ray-training-gpus {options.training_gpus:g}: the local Ray cluster has {resources.get('GPU', 0):g} "
            "GPU(s)"
        )
    if problems:
        raise UsageError("; ".join(problems))


def _died(plan: _Plan, error: BaseException, retries: int, manifest: Manifest) -> list[JobResult]:
    """The error rows of a job whose worker died ``retries + 1`` times."""
    cause = (str(error).strip().splitlines() or [""])[0][:300]
    text = f"the Ray worker running {plan.job.name} died ({type(error).__name__}, {retries + 1} attempt(s)): {cause}"
    return _failed(plan, text, manifest)


def _failed(plan: _Plan, text: str, manifest: Manifest) -> list[JobResult]:
    """Every variant of ``plan`` as an error row saying ``text``. The outputs it was to (re)build are deleted and
    their entries dropped, as the local executor does when a conversion fails (a dead attempt may have written
    some); the up-to-date ones stay recorded."""
    for variant in plan.convert:
        with contextlib.suppress(FileNotFoundError):
            plan.paths[variant.label].unlink()  # checked by owned_output when planned: inside the output folder
        manifest.drop(f"{plan.job.name}/{variant.label}")
    rows = [
        JobResult(
            model=plan.job.name,
            label=variant.label,
            mode=variant.mode,
            io_type=variant.io_type,
            path=str(plan.paths[variant.label]),
            status="error",
            error=text,
        )
        for variant in plan.variants
    ]
    return apply_gates(plan.job.gates, rows)


def _result(value: dict[str, Any]) -> JobResult:
    return JobResult(**(value | {"gate_failures": tuple(value["gate_failures"])}))


def run_on_ray(
    run_model: RunModel,
    plans: Sequence[_Plan],
    options: ExecutorOptions,
    jobs: int | None,
    output_dir: Path,
    manifest: Manifest,
    on_event: EventCallback,
) -> list[list[JobResult]]:
    """Run ``run_model`` on each plan as a Ray task (at most ``jobs`` at a time when given, else as many as the
    cluster's CPUs allow) and apply their manifest updates here as they finish. Returns the rows in plan order.
    Raises a task's TflqError as the local executor would, UsageError when the cluster cannot be reached,
    KeyboardInterrupt on Ctrl-C.

    A model with nothing to redo (every variant up to date, no ``auto`` search) is not sent anywhere: its rows come
    from the manifest, here, so an unchanged rerun starts no cluster."""
    done: dict[int, list[JobResult]] = {}
    for index, plan in enumerate(plans):
        if not plan.convert and not plan.measure and not plan.job.searches:
            done[index] = run_model(plan, output_dir, manifest, on_event)
    if len(done) == len(plans):
        return [done[index] for index in range(len(plans))]
    if options.address is None or _on_loopback(options.address):
        # before Ray is imported: a local cluster binds to 127.0.0.1 only, and Ray does not rewrite a 127.0.0.1
        # address into this machine's outward one (it does on Linux without the variable)
        os.environ[LOOPBACK_VARIABLE] = "0"
    import ray
    from ray import exceptions as ray_errors

    died = (
        ray_errors.WorkerCrashedError,
        ray_errors.NodeDiedError,
        ray_errors.OutOfMemoryError,
        ray_errors.LocalRayletDiedError,
    )
    hooks = {name: value for name, value in os.environ.items() if name.startswith(TEST_HOOK_PREFIX)}
    versions = _versions()
    sent = [plan for index, plan in enumerate(plans) if index not in done]
    training = any(_needs_training(variant.mode) for plan in sent for variant in plan.variants)
    # Ray's driver prints the raylet's notices (a worker died...) on stdout from a thread of its own: during the run
    # they go to stderr, where the rest of the run's progress goes, and stdout stays the report (--json).
    with contextlib.redirect_stdout(sys.stderr), _connected(options, training):
        from ray.util.queue import Queue

        task = ray.remote(run_job_in_worker)
        live = Queue(actor_options={"num_cpus": 0})  # the tasks' progress events, drained below as they come
        pending_plans = [index for index in range(len(plans)) if index not in done]
        running: dict[Any, int] = {}

        def submit(index: int) -> None:
            plan = plans[index]
            needs_training = any(_needs_training(variant.mode) for variant in plan.variants)
            entries = {key: manifest.entry(key) for key in manifest.keys() if key.startswith(f"{plan.job.name}/")}
            reference = task.options(
                num_cpus=options.cpus,
                num_gpus=options.training_gpus if needs_training else 0,
                max_retries=options.retries,
                retry_exceptions=False,
                name=f"tflq {plan.job.name}",
            ).remote(run_model, plan, str(output_dir), entries, versions, os.getcwd(), hooks, live)
            running[reference] = index
            for variant in plan.variants:
                if variant in plan.convert or variant in plan.measure:
                    on_event("start", plan.job.name, variant.label, "sent to Ray")

        try:
            while pending_plans or running:
                while pending_plans and (jobs is None or len(running) < jobs):
                    submit(pending_plans.pop(0))
                finished, _ = ray.wait(list(running), num_returns=1, timeout=0.25)  # short: Ctrl-C is seen at once
                _drain(live, on_event)  # what the running tasks did since the last look
                for reference in finished:
                    index = running.pop(reference)
                    try:
                        value = ray.get(reference)
                    except died as error:
                        done[index] = _died(plans[index], error, options.retries, manifest)
                        for row in done[index]:
                            on_event("fail", row.model, row.label, row.error or "failed")
                        continue
                    except ray_errors.RayTaskError as error:
                        cause = error.cause if isinstance(error.cause, BaseException) else None
                        if isinstance(cause, TflqError):
                            raise cause from None
                        raise
                    if "refused" in value:
                        done[index] = _failed(plans[index], value["refused"], manifest)
                        for row in done[index]:
                            on_event("fail", row.model, row.label, value["refused"])
                        continue
                    done[index] = _apply(value, manifest, on_event)
        except BaseException:
            for reference in running:
                ray.cancel(reference, force=True)
            raise
        finally:
            with contextlib.suppress(Exception):
                live.shutdown(force=True)
    return [done[index] for index in range(len(plans))]


def _drain(live: Any, on_event: EventCallback) -> None:
    """Forward every event the tasks have queued so far (a task's own "start" was shown when it was sent)."""
    count = live.qsize()
    if count:
        for event in live.get_nowait_batch(count):
            if event[0] != "start":
                on_event(*event)


def _on_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rpartition(":")[0] or address
    return host == "localhost" or host.startswith("127.")


def _needs_training(mode: str) -> bool:
    from tflq.modes import MODES

    return MODES[mode].needs_training


def _apply(value: dict[str, Any], manifest: Manifest, on_event: EventCallback) -> list[JobResult]:
    """Record one finished task: its manifest updates (in its order), its log records and events; its rows."""
    for action, key, entry in value["updates"]:
        if action == "record" and entry is not None:
            manifest.record(key, entry)
        else:
            manifest.drop(key)
    for level, message in value["records"]:
        log.log(level, "%s", message)
    for event in value["events"]:
        if event[0] != "start":  # the job's start was shown when it was sent; these are its results
            on_event(*event)
    return [_result(row) for row in value["results"]]


def timed_start(num_cpus: int) -> float:
    """Start a local loopback cluster (see :func:`start_local_cluster`); returns the seconds it took."""
    started = time.perf_counter()
    start_local_cluster(num_cpus)
    return time.perf_counter() - started

