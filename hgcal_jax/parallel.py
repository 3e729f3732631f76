"""Data parallelism: one `("data",)` mesh, batch sharded on it, train state replicated.

This is the user's "pmap training", written the current way: `jax.jit` with `NamedSharding`s
(in today's JAX `jax.pmap` is itself a thin wrapper over jit + shard_map). The same code runs on
one device, N local devices, and N hosts: on several hosts `initialize()` calls
`jax.distributed.initialize()`, every process feeds its own slice of the data, and
`jax.make_array_from_process_local_data` assembles the global batch (see data/pipeline.py).
"""

from __future__ import annotations

import logging
import os

import jax
from jax.sharding import NamedSharding, PartitionSpec

AXIS = "data"

# Environment variables by which a cluster launcher announces a multi-process job.
_CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                 "TPU_WORKER_HOSTNAMES")


def initialize() -> None:
    """`jax.distributed.initialize()` when launched as a multi-process job; no-op otherwise."""
    if jax.distributed.is_initialized():
        return
    multi = any(os.environ.get(v) for v in _CLUSTER_VARS)
    if os.environ.get("SLURM_NTASKS") == "1" or os.environ.get("OMPI_COMM_WORLD_SIZE") == "1":
        multi = bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
    if multi:
        # JAX reads the coordinator from the environment but not these two (SLURM/MPI set theirs).
        kwargs = {}
        if os.environ.get("JAX_NUM_PROCESSES"):
            kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
        if os.environ.get("JAX_PROCESS_ID"):
            kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
        jax.distributed.initialize(**kwargs)
        logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                     jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(n_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh over the first `n_devices` devices (all by default)."""
    devices = jax.devices()[: n_devices or jax.device_count()]
    return jax.sharding.Mesh(devices, (AXIS,))


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} is not divisible by the {n} devices of the mesh")
