"""Data-parallel training over several devices, through Keras's distribution API (JAX backend).

`models.<name>.devices` is 1 (the default), N, or `all`: the devices the backend sees, on this
machine, or across processes when Keras's own variables are set in each process
(KERAS_DISTRIBUTION_JOB_ADDRESSES = the first process's host:port, KERAS_DISTRIBUTION_NUM_PROCESSES,
KERAS_DISTRIBUTION_PROCESS_ID). `batch_size` stays the global batch: each step averages the
gradient over batch_size images split evenly across the devices, so the learning rate and its
schedule mean what they mean on one device, and the results agree with one device's up to the
order of the sums. Each process feeds its share of every global batch (`local_share`); each epoch's
last partial batch, and validation's, are cut to a multiple of the device count. Process 0 writes
the outputs and logs to MLflow; the others train and exit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from classic_cnns import backend
from classic_cnns.errors import UserError

PROCESSES_ENV = "KERAS_DISTRIBUTION_NUM_PROCESSES"


@dataclass(frozen=True)
class Placement:
    devices: int = 1  # in all processes together
    processes: int = 1
    index: int = 0  # this process's

    @property
    def chief(self) -> bool:
        return self.index == 0

    def describe(self, device: str) -> str:
        """Where a training runs, in words: the device, how many, in how many processes."""
        return (
            device
            + (f" x{self.devices}" if self.devices > 1 else "")
            + (f" in {self.processes} processes" if self.processes > 1 else "")
        )

    def local_batch(self, batch_size: int) -> int:
        return batch_size // self.processes


def place(asked: int | str, batch_size: int) -> Placement:
    """Set Keras's distribution for `asked` devices (before the model is built)."""
    processes = int(os.environ.get(PROCESSES_ENV) or 1)
    if asked == 1 and processes == 1:
        return Placement()
    if backend.name() != "jax":
        raise UserError(
            f"devices: {asked} (or {PROCESSES_ENV}={processes}) needs the JAX backend, whose Keras "
            f"distribution API trains on several devices: run with KERAS_BACKEND=jax, or set devices: 1"
        )
    import jax
    import keras

    if processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPUs' collectives; GPUs use NCCL
        keras.distribution.initialize()  # reads the KERAS_DISTRIBUTION_* variables
    devices = keras.distribution.list_devices()
    n = len(devices) if asked == "all" else asked
    if n > len(devices):
        raise UserError(
            f"devices: {asked}, but the backend sees {len(devices)} ({', '.join(devices)}): set devices: all "
            f"or fewer (on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count={asked} makes {asked})"
        )
    if processes > 1 and n != len(devices):
        raise UserError(
            f"devices: {asked} with {processes} processes: set devices: all ({len(devices)} devices), "
            "so that every process takes part"
        )
    if batch_size % n:
        raise UserError(f"batch_size {batch_size} does not split evenly over {n} devices: make it a multiple of {n}")
    if n > 1:
        distribution = keras.distribution.DataParallel(devices=devices[:n])
        distribution.auto_shard_dataset = False  # each process feeds its own share: local_share
        keras.distribution.set_distribution(distribution)
    return Placement(n, processes, jax.process_index())


def local_share(arrays: tuple[np.ndarray, ...], batch_size: int, placement: Placement) -> tuple[np.ndarray, ...]:
    """This process's rows of each global batch of `batch_size` rows, in order, after cutting the
    last partial batch to a multiple of the device count (all rows with one device)."""
    if placement.devices == 1 and placement.processes == 1:
        return arrays
    n = len(arrays[0])
    full = n // batch_size * batch_size
    kept = full + (n - full) // placement.devices * placement.devices
    shares = []
    for a in arrays:
        a = a[:kept]
        if placement.processes > 1:
            per, rest = batch_size // placement.processes, a.shape[1:]
            head = a[:full].reshape(-1, placement.processes, per, *rest)[:, placement.index].reshape(-1, *rest)
            tail = a[full:].reshape(placement.processes, -1, *rest)[placement.index]
            a = np.concatenate([head, tail])
        shares.append(a)
    return tuple(shares)


def to_one_device(model, build):
    """A copy of a model trained across processes (weights and optimizer state) on this process's
    devices only, built by `build()` without a distribution: Keras cannot save a model whose
    variables span other processes' devices (the save waits for them)."""
    import keras

    values = [np.asarray(v) for v in model.variables]
    optimizer_values = [np.asarray(v) for v in model.optimizer.variables]
    keras.distribution.set_distribution(None)
    local = build()
    for variable, value in zip(local.variables, values, strict=True):
        variable.assign(value)
    local.optimizer.build(local.trainable_variables)
    for variable, value in zip(local.optimizer.variables, optimizer_values, strict=True):
        variable.assign(value)
    return local
