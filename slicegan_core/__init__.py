"""SliceGAN Studio core: learn steerable 3D microstructures from 2D micrographs (AdaIN-SliceGAN).

Public API: :func:`load_model` / ``Model.generate``, :func:`train` / :func:`resume`, :func:`synthesize`,
:func:`evaluate`. The data path reads top to bottom: data -> networks -> train -> generate -> metrics.
"""
__version__ = "0.1.0"

from .config import ModelConfig, TrainConfig, preset  # noqa: E402
from .data import DatasetSpec, load_training_data  # noqa: E402
from .generate import Model, load_model  # noqa: E402
from .synthetic import synthesize  # noqa: E402
from .train import resume, train  # noqa: E402
from .evaluate import evaluate  # noqa: E402  (after .train: binds the function, the subpackage stays importable)

__all__ = ["__version__", "ModelConfig", "TrainConfig", "preset", "DatasetSpec", "load_training_data",
           "Model", "load_model", "synthesize", "train", "resume", "evaluate"]
