"""Sample-quality metrics as papers report them: FID, KID, Inception Score and improved
precision/recall, on the features of the FID Inception-v3 (pytorch-fid's weights, read
without torch), with clean-fid's quantization and resizing."""

from ._features import inception_features as inception_features
from ._frechet import FeatureStats as FeatureStats, fid as fid
from ._inception import InceptionV3 as InceptionV3
from ._inception_score import inception_score as inception_score
from ._kid import kid as kid
from ._precision_recall import precision_recall as precision_recall
from ._resize import clean_resize as clean_resize, quantize as quantize
from ._torch_file import read_state_dict as read_state_dict
from ._weights import (
    WEIGHTS_FILE as WEIGHTS_FILE,
    WEIGHTS_URL as WEIGHTS_URL,
    check_weights_file as check_weights_file,
    inception_state_shapes as inception_state_shapes,
    load_inception as load_inception,
    sha256_of as sha256_of,
)
