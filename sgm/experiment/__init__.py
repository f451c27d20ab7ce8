"""The application layer: experiments described with sgm's own objects, their JSON form, runs
on disk, the phases of the main job (`python main.py --experiment NAME`) and its figures.

It uses the numerical library (`sgm`) and is never used by it: `import sgm` does not import
this package. Import it as `import sgm.experiment` or `from sgm.experiment import Experiment`.
"""

from .._io import write_json as write_json
from . import phases as phases, plot as plot
from ._experiment import (
    SAMPLERS as SAMPLERS,
    Eval as Eval,
    Experiment as Experiment,
    Quality as Quality,
    Sample as Sample,
    Train as Train,
)
from ._overrides import (
    override as override,
    settings as settings,
    valid_keys as valid_keys,
)
from ._registry import register as register
from ._run import Run as Run, RunDir as RunDir, load_run as load_run, runs_of as runs_of
from ._serial import from_json as from_json, to_json as to_json
from ._source import (
    experiment_from_file as experiment_from_file,
    is_experiment_file as is_experiment_file,
)
from ._specs import Data as Data, Net as Net
