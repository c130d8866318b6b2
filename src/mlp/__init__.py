"""mlp: train, evaluate and explain multilayer-perceptron image classifiers."""

__version__ = "0.1.0"
