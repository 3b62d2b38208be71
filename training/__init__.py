"""Part B: training, sampling and evaluating the MNIST models (`python -m training`).

Importing the package registers its sampling backend "mnist" (training.backend.MnistBackend) with
samplers.backends, which lists this package among its PLUGINS.
"""
from samplers.backends import register_backend

register_backend("mnist", "training.backend:MnistBackend")
