"""Configuration as the library's own objects: a registry of the classes a configuration may
hold, generic (de)serialisation as class name + fields, and command-line values parsed by the
fields' declared types.

An object is written as `{"__class__": name, field: value, ...}` with the keyword arguments that
rebuild it (`fields_of`): the init fields of an `eqx.Module` or dataclass, or what an
`AbstractSpec` says. Classes themselves are written as `{"__type__": name}`.
Adding an SDE, network or sampler to configurations is one `register` line.
"""

import abc
import dataclasses
import hashlib
import inspect
import json
import types
import typing
from typing import Any, Literal

_REGISTRY: dict[str, type] = {}


def register(*classes: type) -> None:
    """Allows `classes` in configurations (by class name, which must be unique)."""
    for cls in classes:
        other = _REGISTRY.get(cls.__name__)
        if other is not None and other is not cls:
            raise ValueError(f"two classes named {cls.__name__} registered: {other} and {cls}.")
        _REGISTRY[cls.__name__] = cls


def registered(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown class {name!r} in the configuration; known: {', '.join(sorted(_REGISTRY))}."
        ) from None


class AbstractSpec(abc.ABC):
    """A configuration object that is not a dataclass: it says which keyword arguments
    rebuild it and their types; equal when those are equal."""

    @abc.abstractmethod
    def config_fields(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this object."""

    @abc.abstractmethod
    def config_hints(self) -> dict[str, Any]:
        """The declared types of those arguments (None where unknown)."""

    def __eq__(self, other):
        return type(other) is type(self) and self.config_fields() == other.config_fields()

    def __hash__(self):
        return hash(fingerprint(self))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config_fields().items())
        return f"{type(self).__name__}({args})"


def fields_of(obj) -> dict[str, Any]:
    """The keyword arguments that rebuild `obj`."""
    if isinstance(obj, AbstractSpec):
        return obj.config_fields()
    # a learned array (a `LearnedVPSDE`'s schedule) is initialised from the other fields and
    # restored from the model's checkpoint, never written to a configuration
    return {
        f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if f.init and not f.metadata.get("learned")
    }


def to_json(obj) -> Any:
    """A JSON-ready structure for a configuration value."""
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, tuple | list):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, type):
        if _REGISTRY.get(obj.__name__) is not obj:
            raise ValueError(f"class {obj.__name__} is not registered for configurations.")
        return {"__type__": obj.__name__}
    cls = type(obj)
    if _REGISTRY.get(cls.__name__) is not cls or not (
        dataclasses.is_dataclass(obj) or isinstance(obj, AbstractSpec)
    ):
        raise ValueError(
            f"{cls.__name__} cannot be written to a configuration: register it with "
            "sgm.register (a dataclass or eqx.Module with static fields)."
        )
    return {"__class__": cls.__name__, **{k: to_json(v) for k, v in fields_of(obj).items()}}


def from_json(data) -> Any:
    """Rebuilds what `to_json` wrote; lists come back as tuples (configurations are frozen)."""
    if isinstance(data, list):
        return tuple(from_json(v) for v in data)
    if isinstance(data, dict):
        if "__type__" in data:
            return registered(data["__type__"])
        if "__class__" in data:
            cls = registered(data["__class__"])
            kwargs = {k: from_json(v) for k, v in data.items() if k != "__class__"}
            try:
                return cls(**kwargs)
            except TypeError as e:
                raise ValueError(f"cannot rebuild {cls.__name__} from {kwargs}: {e}") from e
        return {k: from_json(v) for k, v in data.items()}
    return data


def fingerprint(obj) -> str:
    """A short hash of a configuration value's canonical JSON."""
    text = json.dumps(to_json(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def field_hints(obj) -> dict[str, Any]:
    """Declared types of the fields of `obj` (empty where none are declared)."""
    if isinstance(obj, AbstractSpec):
        return obj.config_hints()
    try:
        return typing.get_type_hints(type(obj))
    except Exception:  # forward references a configuration never needs
        return {}


def signature_hints(fn) -> dict[str, Any]:
    """Declared types of the keyword parameters of `fn`, or `type(default)` where undeclared."""
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if p.annotation is not inspect.Parameter.empty and not isinstance(p.annotation, str):
            out[name] = p.annotation
        elif p.default not in (inspect.Parameter.empty, None):
            default = p.default
            out[name] = (
                tuple[type(default[0]), ...]
                if isinstance(default, tuple) and default
                else type(default)
            )
    return out


def parse_value(raw: str, hint, where: str):
    """Parses a command-line string into `hint` (int, float, bool, str, Literal, tuples, None
    in unions, or a registered class by name, `Name` or `Name()`); errors say which key and what
    was expected."""
    try:
        return _parse(raw, hint)
    except ValueError as e:
        raise ValueError(f"bad value {raw!r} for {where}: {e}") from None


def _parse(raw: str, hint):
    if hint is None or hint is Any:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if raw.lower() == "none" and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _parse(raw, option)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        choices = typing.get_args(hint)
        for c in choices:
            if str(c) == raw:
                return c
        raise ValueError(f"expected one of {choices}")
    if origin is tuple or hint is tuple:
        args = typing.get_args(hint)
        item = args[0] if args else int
        parts = raw.replace(",", " ").split()
        return tuple(_parse(p, item) for p in parts)
    if hint is bool:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError("expected true or false")
        return raw.lower() in ("true", "1")
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
    if hint is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    if hint is str:
        return raw
    if isinstance(hint, type):
        cls = _REGISTRY.get(raw.removesuffix("()"))  # as `--help` shows it, or the bare name
        if cls is not None and issubclass(cls, hint):
            return cls()
        known = sorted(n for n, c in _REGISTRY.items() if issubclass(c, hint))
        raise ValueError(f"expected the name of a {hint.__name__}: one of {known}")
    raise ValueError(f"a {hint} cannot be given on the command line")


def check_types(obj, where: str = "") -> None:
    """Raises a ValueError naming the first field of a configuration value (recursively) whose
    value does not have its declared simple type (int, float, bool, str, tuples of those,
    optional ones, Literal choices); other declared types are not judged."""
    if isinstance(obj, tuple | list):
        for i, v in enumerate(obj):
            check_types(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_types(v, f"{where}.{k}" if where else str(k))
        return
    if not (dataclasses.is_dataclass(obj) or isinstance(obj, AbstractSpec)) or isinstance(
        obj, type
    ):
        return
    hints = field_hints(obj)
    for name, value in fields_of(obj).items():
        key = f"{where}.{name}" if where else name
        hint = hints.get(name)
        if hint is not None and not _fits(value, hint):
            raise ValueError(f"{key} is {value!r}, expected {_describe(hint)}")
        check_types(value, key)


def _fits(value, hint) -> bool:
    """Whether `value` has the simple type `hint` (True where `hint` is not a simple type)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint)) or not all(
            _simple(h) for h in typing.get_args(hint)
        )
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, tuple) and all(_fits(v, args[0]) for v in value) if args else True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _simple(hint) -> bool:
    origin = typing.get_origin(hint)
    return hint in (bool, int, float, str, type(None)) or origin in (Literal, tuple)


def _describe(hint) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(
            "null" if h is type(None) else _describe(h) for h in typing.get_args(hint)
        )
    if typing.get_origin(hint) is Literal:
        return f"one of {typing.get_args(hint)}"
    return str(hint)
