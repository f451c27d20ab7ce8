"""A minimal writer of PyTorch state-dict files without torch, for the reader's tests: the
pickle `torch.save` writes (persistent ids naming storages, tensors reduced to
`torch._utils._rebuild_tensor_v2`), in the zip format or the legacy one."""

import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile

import numpy as np

STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage"}
STORAGES[np.dtype(np.int64)] = "LongStorage"


@contextlib.contextmanager
def _torch_stand_ins():
    """Modules `torch` and `torch._utils` with stand-ins of the names the pickle refers to,
    in sys.modules while pickling only (pickle saves globals by module and name)."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("a stand-in")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    setattr(utils, "_rebuild_tensor_v2", _rebuild_tensor_v2)  # noqa: B010
    for name in STORAGES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))
    setattr(torch, "_utils", utils)  # noqa: B010
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch, utils
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k)
            else:
                sys.modules[k] = v


class _Storage:
    def __init__(self, key, data):
        self.key, self.data = key, data


class _Tensor:
    def __init__(self, rebuild, storage, offset, size, stride):
        self.args = (rebuild, storage, offset, size, stride)

    def __reduce__(self):
        rebuild, storage, offset, size, stride = self.args
        return rebuild, (storage, offset, size, stride, False, collections.OrderedDict())


def _entry(value):
    """`(flat storage, offset, size, stride)` of an array or of such a tuple."""
    if isinstance(value, tuple):
        return value
    a = np.ascontiguousarray(value)
    stride = tuple(int(np.prod(a.shape[i + 1 :])) for i in range(a.ndim))
    return a.reshape(-1), 0, tuple(a.shape), stride


def _pickle_state(state: dict, torch, utils, legacy: bool) -> tuple[bytes, list]:
    storages, tensors = [], collections.OrderedDict()
    for name, value in state.items():
        flat, offset, size, stride = _entry(value)
        storage = _Storage(str(len(storages)), np.asarray(flat))
        storages.append(storage)
        tensors[name] = _Tensor(utils._rebuild_tensor_v2, storage, offset, size, stride)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, _Storage):
                return None
            kind = getattr(torch, STORAGES[obj.data.dtype])
            pid = ("storage", kind, obj.key, "cpu", obj.data.size)
            return (*pid, None) if legacy else pid

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(tensors)
    return buf.getvalue(), storages


def write_state_dict(path, state: dict, *, legacy: bool = False) -> None:
    """Writes `state` ({name: array or (flat storage, offset, size, stride)}) as `torch.save`
    would: a zip `archive/data.pkl` with `archive/data/<key>`, or the legacy stream."""
    with _torch_stand_ins() as (torch, utils):
        data, storages = _pickle_state(state, torch, utils, legacy)
    if legacy:
        with open(path, "wb") as f:
            for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
                pickle.dump(obj, f, protocol=2)
            f.write(data)
            pickle.dump([s.key for s in storages], f, protocol=2)
            for s in storages:
                f.write(np.int64(s.data.size).astype("<i8").tobytes())
                f.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
        return
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data)
        z.writestr("archive/version", "3\n")
        for s in storages:
            z.writestr(
                f"archive/data/{s.key}", s.data.astype(s.data.dtype.newbyteorder("<")).tobytes()
            )


def random_inception_state(seed: int = 0) -> dict:
    """Random arrays under the real names and shapes of the FID Inception state dict; batch
    norms with positive variances, convolutions scaled as torch initialises them."""
    from sgm.metrics import inception_state_shapes

    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in inception_state_shapes().items():
        if name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif name.endswith("bn.weight"):
            state[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            bound = np.sqrt(3.0 / fan_in)
            state[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
        elif name.startswith("fc."):
            state[name] = rng.normal(0.0, 0.1, shape).astype(np.float32)
        else:  # batch-norm shifts near zero, so that features still differ between images
            state[name] = rng.normal(0.0, 0.01, shape).astype(np.float32)
    return state
