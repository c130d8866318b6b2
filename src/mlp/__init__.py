"""mlp: train, evaluate and explain multilayer-perceptron image classifiers.

The Python API (docs/python.md): ``mlp.train``, ``mlp.compare``, ``mlp.load``, ``mlp.evaluate``.
torch is imported when one of them is called, not by ``import mlp``.
"""

__version__ = "0.1.0"

from mlp.api import Comparison, Run, compare, evaluate, load, train  # noqa: E402
from mlp.errors import UserError  # noqa: E402

__all__ = ["Comparison", "Run", "UserError", "compare", "evaluate", "load", "train", "__version__"]
