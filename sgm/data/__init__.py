"""Datasets: MNIST (tfds or local IDX), CIFAR-10, Oxford Flowers, sklearn digits, 2-D toys and
time series, and the user's own files (npz, csv, image folders). Every loader returns a
`Dataset` in model scale with its scaler."""

from ._dataset import Dataset as Dataset, with_lowres_condition as with_lowres_condition
from ._files import (
    csv as csv,
    image_folder as image_folder,
    npz as npz,
    read_series as read_series,
)
from ._idx import read_idx as read_idx, read_mnist_idx as read_mnist_idx
from ._images import (
    center_crop_resize as center_crop_resize,
    cifar10 as cifar10,
    digits as digits,
    flowers as flowers,
    load_tfds as load_tfds,
    mnist as mnist,
)
from ._registry import FILES as FILES, NAMES as NAMES, OPTIONS as OPTIONS, load as load
from ._timeseries import (
    delay_embed as delay_embed,
    delay_unembed as delay_unembed,
    load_csv as load_csv,
    ornstein_uhlenbeck as ornstein_uhlenbeck,
    ou as ou,
    ou_family as ou_family,
    ou_family_check as ou_family_check,
    series_dataset as series_dataset,
    timeseries as timeseries,
    windows as windows,
)
from ._toys import (
    checkerboard as checkerboard,
    eight_gaussians as eight_gaussians,
    swiss_roll as swiss_roll,
    toy as toy,
    two_moons as two_moons,
)
