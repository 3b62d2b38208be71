"""Part B: training, sampling and evaluating the MNIST models (`python -m training`).

The package offers the sampling backend "mnist" (training.backend.MnistBackend) to the Part A
application through its `diffusion_lab.backends` entry point (pyproject.toml).
"""
