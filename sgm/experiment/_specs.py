"""The two parts of an experiment that are specifications rather than objects: the data, a
dataset name with its options (`Data`), and the network, a class with its constructor
arguments (`Net`), built once the data's shape and a key are known."""

import inspect
from pathlib import Path

from .. import data as _data
from .._checks import check_int
from .._dequant import UniformDequantizer
from .._score import AbstractPreconditioning, EDMPreconditioning, ScoreModel
from .._sde import AbstractSDE
from ._serial import AbstractSpec, registered, signature_hints


class Data(AbstractSpec):
    """Where the data come from: a dataset name of `sgm.data.load`, the number of training and
    test examples kept (`None`: all), optional low-resolution maps to condition on, and the
    loader's options (`length` for "ou", `resolution` for "flowers", ...).

    The user's files: `Data("npz", path=...)`, `Data("csv", path=..., layout="long",
    window=64)`, `Data("image_folder", path=..., resolution=32)`; a relative `path` is
    resolved against the working directory here, so the run's `config.json` records where
    the data are and resuming from elsewhere reads the same file."""

    def __init__(self, name: str, *, n_train=None, n_test=None, lowres_factor=None, **options):
        if name not in _data.NAMES:
            raise ValueError(f"unknown dataset {name!r}; one of {', '.join(_data.NAMES)}.")
        allowed = _data.OPTIONS.get(name, {})
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"dataset {name!r} takes no option {unknown}; its options: {sorted(allowed)}."
            )
        if name in _data.FILES:
            if not isinstance(options.get("path"), str | Path):
                raise ValueError(f"Data({name!r}) needs path='...', the file or folder to read.")
            options["path"] = str(Path(options["path"]).expanduser().resolve())
        n_train = check_int("data.n_train", n_train, none=True)
        n_test = check_int("data.n_test", n_test, none=True)
        lowres_factor = check_int("data.lowres_factor", lowres_factor, minimum=2, none=True)
        self.name, self.n_train, self.n_test = name, n_train, n_test
        self.lowres_factor, self.options = lowres_factor, dict(options)

    def config_fields(self) -> dict:
        return {
            "name": self.name,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "lowres_factor": self.lowres_factor,
            **self.options,
        }

    def config_hints(self) -> dict:
        return {
            "name": str,
            "n_train": int | None,
            "n_test": int | None,
            "lowres_factor": int | None,
            **_data.OPTIONS.get(self.name, {}),
        }

    def load(self, data_dir=None, *, key, shard: tuple[int, int] | None = None) -> "_data.Dataset":
        """The dataset; with `shard=(rank, count)` the training split is that process's share
        of it (`Dataset.sharded`; the tfds datasets read only those rows)."""
        rows = None if shard is None else (*shard, self.n_train)
        ds = _data.load(self.name, data_dir=data_dir, key=key, train_rows=rows, **self.options)
        if self.lowres_factor:
            ds = _data.with_lowres_condition(ds, self.lowres_factor)
        if ds.shard is not None:  # read sharded, and cut to n_train before
            return ds.subset(n_test=self.n_test)
        ds = ds.subset(n_train=self.n_train, n_test=self.n_test)
        return ds if shard is None else ds.sharded(*shard)


# What the data decide when a network is built, never part of its configuration.
_DATA_DECIDED = ("data_shape", "key", "num_classes", "cond_dim", "cond_channels")


class Net(AbstractSpec):
    """A network class and its constructor arguments, apart from what the data decide (shape,
    key, conditioning sizes). `conditional=True` conditions it on what the dataset carries:
    parameter vectors or maps when it has them, else class labels (with label dropout)."""

    def __init__(
        self,
        cls,
        *,
        conditional: bool = False,
        preconditioning: AbstractPreconditioning = EDMPreconditioning(),
        dequantizer: UniformDequantizer | None = None,
        **kwargs,
    ):
        cls = registered(cls) if isinstance(cls, str) else cls
        registered(cls.__name__)
        if not isinstance(preconditioning, AbstractPreconditioning):
            raise ValueError(
                "net.preconditioning must be an sgm preconditioning (EDMPreconditioning() or "
                f"NoisePrediction()), got {preconditioning!r}."
            )
        if dequantizer is not None and not isinstance(dequantizer, UniformDequantizer):
            raise ValueError(
                "net.dequantizer must be None or UniformDequantizer(num_bits=, scaler=) (a "
                f"learned dequantizer has weights, not settings), got {dequantizer!r}."
            )
        params = self._parameters(cls)
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(
                f"{cls.__name__} has no argument {unknown}; its arguments: {sorted(params)}."
            )
        self.cls, self.conditional, self.kwargs = cls, bool(conditional), dict(kwargs)
        self.preconditioning, self.dequantizer = preconditioning, dequantizer

    @staticmethod
    def _parameters(net_cls) -> dict[str, inspect.Parameter]:
        ps = inspect.signature(net_cls.__init__).parameters
        return {
            n: p
            for n, p in ps.items()
            if n != "self"
            and n not in _DATA_DECIDED
            and p.kind is not inspect.Parameter.VAR_KEYWORD
        }

    def resolved(self) -> dict:
        """Every constructor argument: the class's defaults updated with those given."""
        defaults = {n: p.default for n, p in self._parameters(self.cls).items()}
        return {**defaults, **self.kwargs}

    def config_fields(self) -> dict:
        return {
            "cls": self.cls,
            "conditional": self.conditional,
            "preconditioning": self.preconditioning,
            "dequantizer": self.dequantizer,
            **self.resolved(),
        }

    def config_hints(self) -> dict:
        hints = signature_hints(self.cls.__init__)
        return {
            "conditional": bool,
            "preconditioning": AbstractPreconditioning,
            "dequantizer": UniformDequantizer | None,
            **{n: hints.get(n) for n in self._parameters(self.cls)},
        }

    def conditioning(self, num_classes, cond_shape) -> dict:
        """The network keywords for data with `num_classes` labels or conditioning inputs of
        shape `cond_shape` (those win)."""
        if not self.conditional:
            return {}
        params = inspect.signature(self.cls.__init__).parameters
        if cond_shape is not None:
            name = "cond_dim" if len(cond_shape) == 1 else "cond_channels"
            if name not in params:
                what = "parameter vectors" if len(cond_shape) == 1 else f"maps {cond_shape}"
                raise ValueError(f"{self.cls.__name__} cannot condition on {what}; use UNet.")
            return {name: cond_shape[0]}
        if num_classes is None:
            raise ValueError(
                "model.conditional needs data with labels, parameters or maps; this "
                "dataset has none."
            )
        return {"num_classes": num_classes}

    def build(self, sde: AbstractSDE, data_shape, *, key, num_classes=None, cond_shape=None):
        """The `ScoreModel` of this network for data of `data_shape`."""
        cond = self.conditioning(num_classes, cond_shape)
        net = self.cls(tuple(data_shape), key=key, **self.resolved(), **cond)
        return ScoreModel(
            net, sde, preconditioning=self.preconditioning, dequantizer=self.dequantizer
        )

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        cond = ", conditional=True" if self.conditional else ""
        if self.preconditioning != EDMPreconditioning():
            cond += f", preconditioning={self.preconditioning!r}"
        if self.dequantizer is not None:
            cond += f", dequantizer={self.dequantizer!r}"
        return f"Net({self.cls.__name__}{cond}{', ' if args else ''}{args})"
