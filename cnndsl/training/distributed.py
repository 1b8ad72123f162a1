"""Where a run's arrays live: data parallelism over every device of every process, on JAX's own engine.

One mesh axis, `data`, spans the devices (`--devices all|N` of this process; with `jax.distributed`, those of
every process). Parameters, batch-norm statistics, optimizer state and the in-memory dataset are replicated;
inside the jitted step each global batch is constrained to be split along `data`, and XLA's SPMD partitioner
does the rest: every device computes its slice, gradients and batch-norm statistics are reduced over the
global batch (what the one-device step computes), and the optimizer update runs replicated. The step is
written once, over the global arrays; nothing here is a runtime of cnndsl's own.

Multi-process (`initialize`): one process per host (or per GPU), started by the user, SLURM, Open MPI or a
TPU pod; `jax.distributed.initialize` connects them. Each process holds the whole in-memory dataset (the
digits to CIFAR fit any host) and computes the same global order, so a batch's slices are gathered where
they are used and no example crosses the network; process 0 alone prints and writes metrics and plots;
orbax checkpoints are written by every process together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnndsl.lang.settings import TrainingError
from cnndsl.training.rendezvous import DistributedError, meet

AXIS = "data"


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               timeout: int | None = None) -> None:
    """Join the processes of a multi-process run (`jax.distributed.initialize`), once, before any JAX array
    exists. With no arguments JAX detects the cluster (SLURM, Open MPI, Kubernetes, TPU pods). On CPU the
    collectives use gloo. A coordinator that never answers is an error after `timeout` seconds."""
    import os

    if timeout is None:  # how long to wait for every process to join (the environment may say otherwise)
        text = os.environ.get("CNNDSL_DISTRIBUTED_TIMEOUT", "120")
        if not text.strip().isdigit() or int(text) < 1:
            raise DistributedError(f"CNNDSL_DISTRIBUTED_TIMEOUT={text!r}: give a whole number of seconds, e.g. 120")
        timeout = int(text)
    if coordinator is not None and num_processes is not None and process_id is not None:
        # XLA aborts the process (no exception) when a process never comes: meet first (training.rendezvous)
        meet(coordinator, num_processes, process_id, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices only; GPUs/TPUs use their own
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout)
    except Exception as err:  # noqa: BLE001 - XLA raises its own error types for a failed connection
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        where = f"the coordinator {coordinator}" if coordinator else "the cluster's coordinator"
        raise DistributedError(f"could not join {where} within {timeout} s as process {process_id} of "
                               f"{num_processes}: {first[:300]}") from None


def cluster_detected() -> str | None:
    """The name of the cluster environment `jax.distributed.initialize()` would detect (SLURM, Open MPI,
    Kubernetes, a TPU pod), or None on a plain machine. A one-task SLURM or MPI job is not a cluster."""
    try:
        from jax._src.clusters import (
            ClusterEnv,  # JAX's own detection (private: guarded)
        )

        for env in ClusterEnv._cluster_types:
            if not getattr(env, "opt_in_only_method", False) and env.is_env_present():
                return str(getattr(env, "name", env.__name__))
    except Exception:  # noqa: BLE001 - an internal API that may move; fall back to the common variables
        pass
    import os

    for variable, name in (("SLURM_NTASKS", "slurm"), ("OMPI_COMM_WORLD_SIZE", "ompi")):
        if int(os.environ.get(variable, "1") or 1) > 1:
            return name
    return None


def start_processes(coordinator: str | None, num_processes: int | None, process_id: int | None) -> bool:
    """`cnndsl train`'s multi-process start: with --coordinator/--num-processes/--process-id, or in a detected
    cluster, join the other processes (True); a single process otherwise (False)."""
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise DistributedError("--coordinator, --num-processes and --process-id go together (see docs/distributed.md)")
    if all(given):
        if num_processes == 1:
            return False
        if not 0 <= process_id < num_processes:
            raise DistributedError(f"--process-id {process_id} must be between 0 and {num_processes - 1}")
        initialize(coordinator, num_processes, process_id)
        return True
    detected = cluster_detected()
    if detected is not None:
        initialize()
        return jax.process_count() > 1
    return False


@dataclass(frozen=True)
class Placement:
    """The mesh a run's arrays live on; `count` devices along `data` (1: a single device, no mesh)."""

    mesh: Mesh | None
    shard_params: bool = False  # FSDP-style: parameters and optimizer state split along `data` too

    @classmethod
    def create(cls, devices: int | str | None = None, shard_params: bool = False) -> Placement:
        """`devices`: "all" or None (every device of every process), or a number of this process's devices.
        `shard_params`: split each parameter (and its optimizer state) along its largest axis that divides
        over the devices, instead of replicating it; the step gathers what it needs (XLA)."""
        local = jax.local_devices()
        if devices in (None, "all"):
            chosen = jax.devices()
        else:
            count = int(devices)
            if count < 1 or count > len(local):
                raise TrainingError(f"--devices {count}: this process has {len(local)} device"
                                    f"{'s' if len(local) != 1 else ''} ({local[0].platform})")
            if jax.process_count() > 1 and count != len(local):
                raise TrainingError("with several processes every process uses all its devices (--devices all)")
            chosen = local[:count]
        if len(chosen) == 1:
            return cls(None)
        return cls(Mesh(np.array(chosen), (AXIS,)), shard_params)

    @property
    def count(self) -> int:
        """How many devices share each global batch."""
        return 1 if self.mesh is None else self.mesh.size

    @property
    def is_main(self) -> bool:
        """Whether this process prints and writes the run's files (process 0)."""
        return jax.process_index() == 0

    @property
    def replicated(self) -> NamedSharding | None:
        """Every device holds the whole array."""
        return None if self.mesh is None else NamedSharding(self.mesh, P())

    def replicate(self, tree: Any) -> Any:
        """Numpy or JAX arrays onto every device of the mesh (every process passes the same, whole values)."""
        return self._put(tree, lambda shape: self.replicated)

    def local_batch(self, x: np.ndarray) -> jax.Array:
        """This process's rows of a global batch (the input pipeline's share) as one global array laid out
        along `data`: process i's rows are rows [i*b, (i+1)*b) of the batch."""
        if self.mesh is None:
            return jax.device_put(x)
        sharding = NamedSharding(self.mesh, P(AXIS, *([None] * (np.ndim(x) - 1))))
        return jax.make_array_from_process_local_data(sharding, x)

    def state_sharding(self, shape: tuple[int, ...]) -> NamedSharding | None:
        """Where a parameter (or optimizer state) of this shape lives: replicated, or with `shard_params`
        split along its largest axis that the device count divides (small or indivisible ones replicated)."""
        if self.mesh is None:
            return None
        axes = [k for k in range(len(shape)) if shape[k] % self.count == 0] if self.shard_params else []
        if not axes:
            return NamedSharding(self.mesh, P())
        axis = max(axes, key=lambda k: (shape[k], k))
        return NamedSharding(self.mesh, P(*[AXIS if k == axis else None for k in range(len(shape))]))

    def place_state(self, tree: Any) -> Any:
        """Arrays onto the mesh as `state_sharding` says (every process passes the same, whole values)."""
        return self._put(tree, self.state_sharding)

    def _put(self, tree: Any, sharding_of: Any) -> Any:
        """Each array of `tree` onto the mesh with `sharding_of(its shape)`; with several processes, each
        process gives the whole value and keeps the pieces its devices hold."""
        if self.mesh is None:
            return jax.device_put(tree)
        if jax.process_count() == 1:
            return jax.tree.map(lambda a: jax.device_put(a, sharding_of(np.shape(a))), tree)

        def put(a: Any) -> jax.Array:
            full = np.asarray(a)
            return jax.make_array_from_callback(full.shape, sharding_of(full.shape), lambda index: full[index])

        return jax.tree.map(put, tree)

    def state_shardings(self, tree: Any) -> Any:
        """`state_sharding` of every leaf of a tree of arrays or shapes (for jit's out_shardings)."""
        return jax.tree.map(lambda a: self.state_sharding(tuple(a.shape)), tree)

    def split_batch(self, x: jax.Array) -> jax.Array:
        """Inside jit: lay a global batch out along `data` (its leading axis)."""
        if self.mesh is None:
            return x
        spec = P(AXIS, *([None] * (x.ndim - 1)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

    def check_batch(self, batch: int) -> None:
        """The global batch must split evenly over the devices."""
        if batch % self.count:
            raise TrainingError(f"the batch size {batch} does not divide over {self.count} devices; use a multiple "
                                f"of {self.count} (--batch-size {max(self.count, batch // self.count * self.count)})")


def barrier(name: str) -> None:
    """Every process waits here for the others (nothing to do with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(what: dict[str, Any]) -> None:
    """Stop every process unless all were started with the same spec and settings (a digest compared
    across processes); a mismatch names nothing secret, just that they differ."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).digest()[:8]
    mine = np.frombuffer(digest, dtype=np.uint32)
    everyone = np.asarray(multihost_utils.process_allgather(mine))
    if not (everyone == everyone[0]).all():
        differ = [k for k in range(len(everyone)) if not (everyone[k] == everyone[0]).all()]
        which = (f"processes {', '.join(map(str, differ))} differ" if len(differ) > 1 else
                 f"process {differ[0]} differs")
        raise DistributedError(f"the processes were started with different specs or settings ({which} from "
                               "process 0); start every process with the same command")
