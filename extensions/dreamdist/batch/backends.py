"""Where jobs run: local GPU slots, or an existing Ray cluster.

Both expose the same small interface to the runner: `capacity()` (how many more jobs it takes now),
`submit(seed, attempt)` (returns the manifest status to record: "running" or
"submitted"), `wait(timeout)` (finished JobResults), and `stop()` (stop everything in flight and
return their results as interrupted).

Local: one thread per GPU slot, each running one job at a time with CUDA_VISIBLE_DEVICES set to its
GPU: a queue over seeds and a list of free GPUs; nothing more elaborate is needed on one machine.
Ray: each attempt is one task (num_gpus=1 by default) on an existing cluster, which does the
placement, so no home-made scheduler; Ray sets CUDA_VISIBLE_DEVICES for the task and launch.py
inherits it. --out, the threestudio checkout, the config and the distribution must be on a
filesystem every node sees, at the same paths (with working flock for OUT/seeds/*.lock, e.g. NFSv4),
and dreamdist must be importable on every node.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any, Protocol

from dreamdist.batch.jobs import BatchSpec, JobResult, run_job
from dreamdist.utils.errors import InputError


class Backend(Protocol):
    description: str

    def capacity(self) -> int: ...

    def submit(self, seed: int, attempt: int) -> dict[str, Any]: ...

    def wait(self, timeout: float) -> list[JobResult]: ...

    def stop(self) -> list[JobResult]: ...

    def close(self) -> None: ...


def _interrupted(
    spec: BatchSpec, seed: int, attempt: int, gpu: str | None = None, error: str | None = None
) -> JobResult:
    return JobResult(
        seed=seed,
        attempt=attempt,
        status="interrupted",
        wall_s=0.0,
        trial_dir=str(spec.trial_dir(seed)),
        log=str(spec.log_path(seed, attempt)),
        gpu=gpu,
        error=error,
    )


class LocalBackend:
    def __init__(self, spec: BatchSpec, gpus: list[str]) -> None:
        self.spec = spec
        self.free = list(gpus)
        self.description = f"local, {len(gpus)} slot(s) on GPU(s) {','.join(gpus)}"
        self.stop_event = threading.Event()
        self.pool = cf.ThreadPoolExecutor(max_workers=len(gpus), thread_name_prefix="dreamdist-job")
        self.futures: dict[cf.Future, tuple[int, int, str]] = {}

    def capacity(self) -> int:
        return len(self.free)

    def submit(self, seed: int, attempt: int) -> dict[str, Any]:
        gpu = self.free.pop(0)
        fut = self.pool.submit(run_job, self.spec, seed, attempt, gpu, self.stop_event)
        self.futures[fut] = (seed, attempt, gpu)
        return {"status": "running", "gpu": gpu}

    def _collect(self, done: set[cf.Future]) -> list[JobResult]:
        results = []
        for fut in done:
            seed, attempt, gpu = self.futures.pop(fut)
            self.free.append(gpu)
            try:
                results.append(fut.result())
            except Exception as exc:  # noqa: BLE001 - a bug or OS error in one job must not end the batch
                res = _interrupted(self.spec, seed, attempt, gpu, f"{type(exc).__name__}: {exc}")
                res.status = "failed"
                results.append(res)
        return results

    def wait(self, timeout: float) -> list[JobResult]:
        if not self.futures:
            return []
        done, _ = cf.wait(list(self.futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return self._collect(done)

    def stop(self) -> list[JobResult]:
        self.stop_event.set()
        done, _ = cf.wait(list(self.futures))
        return self._collect(done)

    def close(self) -> None:
        self.stop_event.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _ray_job(spec: BatchSpec, seed: int, attempt: int) -> JobResult:
    """Runs inside a Ray worker: the GPU(s) Ray assigned become the job's CUDA_VISIBLE_DEVICES."""
    import ray

    ids = ray.get_gpu_ids()
    gpu = ",".join(str(i) for i in ids) if ids else None
    return run_job(spec, seed, attempt, gpu)


class RayBackend:
    def __init__(
        self,
        spec: BatchSpec,
        address: str,
        gpus_per_task: float = 1.0,
        cpus_per_task: float = 1.0,
        max_in_flight: int | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise InputError(
                f"--backend ray needs Ray: pip install 'ray>=2.9' (in the environment that runs dreamdist) ({exc})"
            ) from exc
        self.ray = ray
        self.spec = spec
        self.started_here = False
        if not ray.is_initialized():
            try:
                if address == "local":  # a private single-node instance, e.g. for tests
                    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
                    self.started_here = True
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except Exception as exc:  # noqa: BLE001 - connection errors: one clear line
                raise InputError(
                    f"--address {address}: cannot connect to a Ray cluster ({exc}); start one with "
                    "`ray start --head` or pass --address local"
                ) from exc
        self.task = ray.remote(num_gpus=gpus_per_task, num_cpus=cpus_per_task, max_retries=0)(_ray_job)
        self.refs: dict[Any, tuple[int, int]] = {}
        self.max_in_flight = max_in_flight
        resources = ray.cluster_resources()
        self.description = (
            f"ray at {address}: {resources.get('GPU', 0):g} GPU(s), "
            f"{resources.get('CPU', 0):g} CPU(s); "
            f"{gpus_per_task:g} GPU + {cpus_per_task:g} CPU per task"
        )
        if gpus_per_task > resources.get("GPU", 0):
            raise InputError(
                f"the Ray cluster at {address} has {resources.get('GPU', 0):g} GPU(s) but each task "
                f"asks for {gpus_per_task:g} (--ray-gpus-per-task); tasks would wait forever"
            )

    def capacity(self) -> int:
        if self.max_in_flight is None:
            return 1 << 30
        return max(0, self.max_in_flight - len(self.refs))

    def submit(self, seed: int, attempt: int) -> dict[str, Any]:
        ref = self.task.remote(self.spec, seed, attempt)
        self.refs[ref] = (seed, attempt)
        return {"status": "submitted", "gpu": None}

    def _result(self, ref) -> JobResult:
        seed, attempt = self.refs.pop(ref)
        try:
            return self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - worker died, node lost, task error: a failed attempt
            res = _interrupted(self.spec, seed, attempt, None, f"ray: {type(exc).__name__}: {str(exc)[:300]}")
            res.status = "failed"
            return res

    def wait(self, timeout: float) -> list[JobResult]:
        if not self.refs:
            return []
        ready, rest = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return [self._result(r) for r in ready]

    def stop(self) -> list[JobResult]:
        results = self.wait(0) if self.refs else []  # keep what finished meanwhile
        for ref, (seed, attempt) in list(self.refs.items()):
            # force=True kills the worker; the job's guard then SIGKILLs its launch.py tree (process.py)
            self.ray.cancel(ref, force=True)
            results.append(_interrupted(self.spec, seed, attempt))
        self.refs.clear()
        return results

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
