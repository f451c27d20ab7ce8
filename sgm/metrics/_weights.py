"""The published weights of the FID Inception-v3, read from pytorch-fid's file."""

import hashlib
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ._inception import BN_EPS, BasicConv, InceptionV3
from ._torch_file import read_state_dict

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILE
)


def _skeleton() -> InceptionV3:
    return eqx.filter_eval_shape(lambda: InceptionV3(key=jr.key(0)))


def _convs(model: InceptionV3) -> dict[str, BasicConv]:
    out = dict(model.stem)
    for block_name, block in model.blocks.items():
        out.update({f"{block_name}.{n}": c for n, c in block.convs.items()})
    return out


def inception_state_shapes() -> dict[str, tuple[int, ...]]:
    """The names and shapes of the state dict `load_inception` reads: torchvision's
    (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_var`, ..., `fc.weight`)."""
    shapes = {}
    for prefix, conv in _convs(_skeleton()).items():
        c = conv.conv.weight.shape[0]
        shapes[f"{prefix}.conv.weight"] = tuple(conv.conv.weight.shape)
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn.{part}"] = (c,)
    shapes["fc.weight"], shapes["fc.bias"] = (1008, 2048), (1008,)
    return shapes


def sha256_of(path) -> str:
    """The SHA-256 of the file at `path`, hex (the protocol records that of the weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_weights_file(path) -> Path:
    """`path` as a Path if it is a file, else a ValueError naming it and where it comes from."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(
            f"no Inception weights at {path}: download {WEIGHTS_FILE} (what pytorch-fid and "
            f"clean-fid fetch) from {WEIGHTS_URL} and pass its path; nothing is downloaded here."
        )
    return path


def load_inception(path) -> InceptionV3:
    """The FID Inception-v3 with the weights of `path`, pytorch-fid's
    `pt_inception-2015-12-05-6726825d.pth` (the TF graph of 2015-12-05 ported to torch), read
    without torch. Batch norms are folded into scale and shift (eps 0.001). A missing, extra or
    misshaped tensor is a ValueError; `num_batches_tracked` counters are ignored."""
    path = check_weights_file(path)
    state = {
        k: v for k, v in read_state_dict(path).items() if not k.endswith(".num_batches_tracked")
    }
    shapes = inception_state_shapes()
    missing, extra = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    if missing or extra:
        raise ValueError(
            f"{path} is not the FID Inception-v3 state dict: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
            f"{'...' if len(extra) > 5 else ''}."
        )
    for k, shape in shapes.items():
        if state[k].shape != shape:
            raise ValueError(f"{path}: {k} has shape {state[k].shape}, expected {shape}.")
    model = _skeleton()
    convs = _convs(model)
    leaves, values = [], []
    for prefix in convs:
        get = lambda part, p=prefix: np.asarray(state[f"{p}.{part}"], np.float64)  # noqa: E731
        scale = get("bn.weight") / np.sqrt(get("bn.running_var") + BN_EPS)
        shift = get("bn.bias") - get("bn.running_mean") * scale
        leaves.append(lambda m, p=prefix: _convs(m)[p].conv.weight)
        values.append(state[f"{prefix}.conv.weight"])
        leaves += [lambda m, p=prefix: _convs(m)[p].scale, lambda m, p=prefix: _convs(m)[p].shift]
        values += [scale, shift]
    leaves += [lambda m: m.fc.weight, lambda m: m.fc.bias]
    values += [state["fc.weight"], state["fc.bias"]]
    return eqx.tree_at(
        lambda m: [f(m) for f in leaves],
        model,
        [jnp.asarray(v, jnp.float32) for v in values],
    )
