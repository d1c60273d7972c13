"""Data parallelism with PyTorch's own engine: the process group that ``torchrun`` describes, and the few things the
training loop (:func:`minidiff.train.train`) needs from it.

Launched by ``torchrun --nproc_per_node=N script.py`` (or ``python -m torch.distributed.run``), every process finds
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment. :func:`setup`
initialises the default process group from them, once: NCCL on CUDA (each process on GPU ``LOCAL_RANK``), gloo on
the CPU. The training loop then

- wraps the model in ``torch.nn.parallel.DistributedDataParallel``, which all-reduces (averages) the gradients
  during ``backward``, so every rank takes the same optimizer step;
- draws each rank's disjoint shard of every global batch (:class:`minidiff.data.TensorSampler` knows the rank and
  the world size; the configured batch is the global one);
- keeps the EMA, the progress bar and the checkpoints on rank 0 (:func:`is_main`); every rank resumes from rank 0's
  checkpoint, which also holds every rank's RNG states;
- averages the loss over the ranks and stops every rank when one of them sees a nan (:func:`mean_and_any`).

Outside torchrun (no ``RANK`` and no ``WORLD_SIZE``) nothing is initialised and every function answers for one
process: rank 0 of a world of 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedSetupError(RuntimeError):
    """The environment describes a multi-process launch that cannot work (a missing or inconsistent variable)."""


def launched() -> bool:
    """Whether this process was started as one of several (``RANK`` or ``WORLD_SIZE`` in the environment)."""
    return bool(os.environ.get("RANK", "").strip() or os.environ.get("WORLD_SIZE", "").strip())


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _env_int(name: str) -> int:
    value = os.environ[name].strip()
    try:
        return int(value)
    except ValueError:
        raise DistributedSetupError(f"{name}={value!r} is not an integer") from None


def setup() -> bool:
    """Initialise the default process group from torchrun's environment (once; later calls return at once).

    Returns whether training runs data-parallel (more than one process). Without ``RANK``/``WORLD_SIZE`` it does
    nothing and returns False. Raises :class:`DistributedSetupError` naming the problem when the environment is
    incomplete or inconsistent (e.g. ``RANK`` set but no ``MASTER_ADDR``), instead of hanging or failing inside
    torch."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if not launched():
        return False
    if not dist.is_available():
        raise DistributedSetupError("this torch build has no torch.distributed; train in one process")
    missing = [k for k in ENV if not os.environ.get(k, "").strip()]
    if missing:
        raise DistributedSetupError(
            f"a multi-process launch needs {', '.join(ENV)} in the environment; missing: {', '.join(missing)}. "
            "Launch with torchrun --nproc_per_node=N (it sets them all), or unset RANK and WORLD_SIZE to train in "
            "one process.")
    rank_, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    if world < 1 or not 0 <= rank_ < world:
        raise DistributedSetupError(f"RANK={rank_} must lie in [0, WORLD_SIZE={world})")
    if torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise DistributedSetupError(f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA devices: "
                                        "--nproc_per_node must not exceed the GPUs of a machine")
        torch.cuda.set_device(local)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, init_method="env://", rank=rank_, world_size=world)
    return world > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process is rank 0: the one that writes checkpoints, shows progress and keeps the EMA."""
    return rank() == 0


def device() -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` under NCCL, else the CPU."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce(values: list[float], op) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device())
    dist.all_reduce(t, op=op)
    return t.tolist()


def mean_and_any(value: float, flag: bool) -> tuple[float, bool]:
    """Average ``value`` over the ranks and OR ``flag`` across them, in one all-reduce. Every rank gets the same
    answer, so a decision taken on it (stop on a nan) is taken by all. Outside a group: ``(value, flag)``."""
    if not active():
        return value, flag
    total, bad = _reduce([0.0 if flag else value, float(flag)], dist.ReduceOp.SUM)
    return total / dist.get_world_size(), bad > 0


def mean(value: float) -> float:
    """``value`` averaged over the ranks (the same number on every rank); ``value`` outside a group."""
    if not active():
        return value
    return _reduce([value], dist.ReduceOp.SUM)[0] / dist.get_world_size()


def gather(obj) -> list:
    """Every rank's ``obj`` (any picklable object), in rank order, on every rank; ``[obj]`` outside a group."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every rank gets here (nothing outside a group)."""
    if active():
        dist.barrier()


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` when data-parallel, else ``model`` itself. DDP broadcasts rank 0's
    parameters and buffers at construction, so every rank starts from the same weights."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    params = [p for p in model.parameters()]
    on_cuda = bool(params) and params[0].device.type == "cuda"
    return DistributedDataParallel(model, device_ids=[params[0].device.index] if on_cuda else None)
