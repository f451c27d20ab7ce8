"""Multi-process jobs: joining one, agreeing across processes, and work split between them.

A job is the same script launched once per process (one per host, or several on one host).
Process 0 alone writes files; a stop request on any process is decided collectively at a step
boundary; evaluation work is split across processes and gathered. With one process every
function here is the identity or a no-op, so single-process code paths are unchanged.
"""

import os
import socket
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from ._sharding import batch_sharding, replicated

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize(*, timeout: int = 300) -> None:
    """Joins the job this process belongs to.

    With `JAX_COORDINATOR_ADDRESS` (`host:port` of process 0), `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID` set, those define it; with none of them, jax's cluster auto-detection does
    (SLURM, Open MPI, Kubernetes, TPU pods). The coordinator listens on its own address only
    (`JAX_COORDINATOR_BIND_ADDRESS` overrides). CPU collectives go through gloo. A process that
    never arrives, or a wrong count, is a RuntimeError after `timeout` seconds, not a hang.
    """
    given = {k: os.environ.get(k) for k in _ENV}
    if any(given.values()) and not all(given.values()):
        missing = [k for k, v in given.items() if not v]
        raise ValueError(
            f"set all of {', '.join(_ENV)} or none (for cluster auto-detection); missing "
            f"{', '.join(missing)}."
        )
    kwargs: dict[str, Any] = {}
    address, num, pid = (given[k] for k in _ENV)
    if address and num and pid:
        try:
            n, rank = int(num), int(pid)
        except ValueError:
            raise ValueError(
                f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got {num!r} and {pid!r}."
            ) from None
        if not (n >= 1 and 0 <= rank < n):
            raise ValueError(
                f"need JAX_NUM_PROCESSES >= 1 and 0 <= JAX_PROCESS_ID < it; got {n} and {rank}."
            )
        if ":" not in address:
            raise ValueError(f"JAX_COORDINATOR_ADDRESS must be host:port, got {address!r}.")
        bind = os.environ.get("JAX_COORDINATOR_BIND_ADDRESS", address)
        kwargs = dict(
            coordinator_address=address,
            num_processes=n,
            process_id=rank,
            coordinator_bind_address=bind,
        )
        _rendezvous(address, n, rank, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
    except Exception as e:
        what = (
            f"{kwargs['num_processes']} processes at {kwargs['coordinator_address']}"
            if kwargs
            else "the job that cluster auto-detection found"
        )
        raise RuntimeError(
            f"could not join {what} within {timeout} s: {str(e).splitlines()[0]}. Check that "
            "every process was started with the same coordinator address and process count "
            "and its own process id."
        ) from e


def _rendezvous(address: str, n: int, rank: int, timeout: float) -> None:
    """Checks that all `n` processes are there, with one count and distinct ids, before jax's
    coordination service starts (which aborts the process, without a Python error, when one
    never arrives). Process 0 listens on the coordinator's address, the others say hello;
    after it, the address is free again for jax."""
    if n == 1:
        return
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    if rank == 0:
        _gather_hellos(host, int(port), n, deadline, timeout)
    else:
        _say_hello(host, int(port), n, rank, deadline, timeout)


def _gather_hellos(host, port, n, deadline, timeout):
    arrived: dict[int, socket.socket | None] = {0: None}
    conns: list[socket.socket] = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen(n)
        problem = None
        while len(arrived) < n and problem is None:
            server.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                conn, _ = server.accept()
            except TimeoutError:
                problem = f"only process(es) {sorted(arrived)} of {n} arrived within {timeout:g} s"
                break
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                their_n, their_rank = map(int, conn.recv(64).decode().split())
            except (OSError, ValueError):
                conn.close()
                continue
            conns.append(conn)
            if their_n != n:
                problem = f"process {their_rank} expects {their_n} processes, process 0 {n}"
            elif their_rank in arrived:
                problem = f"two processes claim JAX_PROCESS_ID={their_rank}"
            arrived[their_rank] = conn
        reply = b"ok" if problem is None else f"error: {problem}".encode()
        for conn in conns:
            try:
                conn.sendall(reply)
                conn.recv(1)  # wait for the other side to close first: the port stays free
            except OSError:
                pass
            conn.close()
    if problem is not None:
        raise RuntimeError(f"could not join {n} processes at {host}:{port}: {problem}.")


def _say_hello(host, port, n, rank, deadline, timeout):
    reply = b""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as conn:
                conn.sendall(f"{n} {rank}".encode())
                conn.settimeout(max(deadline - time.monotonic(), 0.01))
                reply = conn.recv(256)
            if reply:
                break
        except OSError:
            time.sleep(0.2)
    if reply != b"ok":
        what = reply.decode() if reply else f"process 0 did not answer within {timeout:g} s"
        raise RuntimeError(f"could not join {n} processes at {host}:{port}: {what}.")


def is_main() -> bool:
    """Whether this is process 0, the one that writes files."""
    return jax.process_index() == 0


def global_mesh() -> Mesh:
    """A 1-D mesh `('data',)` over every device of every process."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def any_process(flag: bool) -> bool:
    """Whether `flag` is true on any process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    mesh = global_mesh()
    local = np.full((len(jax.local_devices()),), bool(flag))
    flags = jax.make_array_from_process_local_data(batch_sharding(mesh), local)
    out = jax.jit(jnp.any, out_shardings=replicated(mesh))(flags)
    return bool(np.asarray(out.addressable_data(0)))


def broadcast(value):
    """Process 0's `value` (a numpy array or scalar) on every process."""
    if jax.process_count() == 1:
        return value
    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(value)))


def broadcast_text(text: str | None, size: int = 4096) -> str:
    """Process 0's `text` on every process (for names decided by process 0)."""
    if jax.process_count() == 1:
        return _main_text(text)
    buf = np.zeros(size, np.uint8)
    if is_main():
        raw = _main_text(text).encode()
        if len(raw) > size:
            raise ValueError(f"text of {len(raw)} bytes is longer than {size}.")
        buf[: len(raw)] = np.frombuffer(raw, np.uint8)
    return bytes(broadcast(buf)).rstrip(b"\0").decode()


def _main_text(text: str | None) -> str:
    if text is None:
        raise ValueError("broadcast_text needs the text on process 0, got None.")
    return text


def allgather(x) -> np.ndarray:
    """Every process's `x` stacked on a new leading axis, in process order."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x[None]
    return np.asarray(multihost_utils.process_allgather(x, tiled=False))


def to_local(tree):
    """A PyTree of global arrays as whole arrays on this process's default device, for code
    that runs per process (sampling, likelihoods, checkpoints). Replicated arrays are read
    from this process's copy; sharded ones (`sgm.train(fsdp=...)`) are gathered, across
    processes a collective that every process must call."""

    def local(a):
        if not isinstance(a, jax.Array):
            return a
        if a.sharding.is_fully_replicated:
            if a.is_fully_addressable:
                return a
            return jax.device_put(np.asarray(a.addressable_data(0)))
        if a.is_fully_addressable:
            return jax.device_put(a, jax.local_devices()[0])
        return jax.device_put(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(local, tree)


def my_share(n: int) -> slice:
    """The contiguous block of `range(n)` this process computes when work is split."""
    k, rank = jax.process_count(), jax.process_index()
    per = -(-n // k)
    return slice(min(rank * per, n), min((rank + 1) * per, n))


def gather_shares(local: np.ndarray, n: int) -> np.ndarray:
    """Reassembles the blocks `my_share(n)` of every process into the full `n` rows."""
    if jax.process_count() == 1:
        return np.asarray(local)
    k = jax.process_count()
    per = -(-n // k)
    local = np.asarray(local)
    pad = np.zeros((per - len(local), *local.shape[1:]), local.dtype)
    stacked = allgather(np.concatenate([local, pad]))
    return stacked.reshape(k * per, *local.shape[1:])[:n]


def barrier(name: str) -> None:
    """Waits until every process reaches this point (files process 0 wrote are then there)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def split_examples(fn, n: int, *args):
    """`fn(*args)` for `n` examples (each arg `None` or with leading axis `n`; `fn` returns a
    tuple of arrays with leading axis `n`), computed in parts: each process does its block
    `my_share(n)` and every process receives all `n` rows. One process (or fewer examples than
    processes): `fn(*args)` itself."""
    k = jax.process_count()
    if k == 1 or n < k:
        return fn(*args)
    share = my_share(n)
    local = fn(*[None if a is None else a[share] for a in args])
    return tuple(jnp.asarray(gather_shares(np.asarray(a), n)) for a in local)
