"""A PyTorch state dict (`torch.save` of an `OrderedDict` of tensors) read into NumPy arrays
without torch: a restricted unpickler that admits only tensors, their storages and ordered
dicts."""

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    """What `torch.FloatStorage` and its kin unpickle to: the element type."""

    def __init__(self, name: str):
        self.dtype = np.dtype(_DTYPES[name]).newbyteorder("<")


def _rebuild_tensor(storage, offset, size, stride, *_):
    """`torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)` as an
    array (a copy; strides counted in elements)."""
    flat = storage[offset:]
    if not size:
        return np.array(flat[0])
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat, shape=tuple(size), strides=tuple(s * item for s in stride)
    )
    return np.array(view, dtype=flat.dtype.newbyteorder("="))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"{module}.{name} is not part of a state dict of tensors; this reader loads only those."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}.")
        kind, key = pid[1], str(pid[2])
        if not isinstance(kind, _StorageType):
            raise pickle.UnpicklingError(f"unknown storage type {kind!r}.")
        return self._load_storage(key, kind.dtype)


def _read_zip(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise ValueError(f"{path} is a zip without one data.pkl; not a torch.save file.")
        prefix = pkl[0][: -len("data.pkl")]
        cache = {}

        def load(key, dtype):
            if key not in cache:
                cache[key] = np.frombuffer(z.read(f"{prefix}data/{key}"), dtype=dtype)
            return cache[key]

        return _Unpickler(io.BytesIO(z.read(pkl[0])), load).load()


def _read_legacy(path: Path) -> dict:
    """The format of torch before 1.6: pickles of the magic number, protocol, system info,
    the object, the storage keys, then each storage as an int64 count and its bytes."""
    with open(path, "rb") as f:
        if pickle.load(f) != _LEGACY_MAGIC:
            raise ValueError(f"{path} is neither a zip nor a legacy torch.save file.")
        for _ in range(2):  # protocol version, system info
            pickle.load(f)
        storages: dict = {}

        def load(key, dtype):
            if key not in storages:
                storages[key] = [dtype, None]
            return storages[key]

        placeholders = _Unpickler(f, load)
        # tensors are rebuilt once their storages are read: unpickle with placeholders first
        rebuilt = []

        def deferred(storage, offset, size, stride, *_):
            rebuilt.append((storage, offset, size, stride))
            return len(rebuilt) - 1

        placeholders.find_class = lambda m, n: (  # type: ignore[method-assign]
            deferred
            if m == "torch._utils" and n in ("_rebuild_tensor_v2", "_rebuild_tensor")
            else _Unpickler.find_class(placeholders, m, n)
        )
        obj = placeholders.load()
        for key in pickle.load(f):
            dtype = storages[str(key)][0]
            count = int(np.frombuffer(f.read(8), "<i8")[0])
            storages[str(key)][1] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict.")
    return collections.OrderedDict(
        (k, _rebuild_tensor(rebuilt[v][0][1], *rebuilt[v][1:])) for k, v in obj.items()
    )


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state dict file (`torch.save(model.state_dict(), path)`, in
    the zip format of torch >= 1.6 or the legacy one before it) as NumPy arrays by name.
    Nothing but tensors, their storages and ordered dicts is unpickled."""
    path = Path(path)
    reader = _read_zip if zipfile.is_zipfile(path) else _read_legacy
    state = reader(path)
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors.")
    return dict(state)
