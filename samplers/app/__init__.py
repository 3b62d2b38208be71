"""The Part A application on top of the sampler core: the course's tasks on any backend
(`tasks`), images in and out (`images`), the command line `python -m samplers` (`cli`), the
DeepFloyd IF backend and its prompt-embedding cache (`backends`), and what programs around the
core need (`devices`, `files`, `arguments`). The core (`samplers.*`) never imports this package.
"""
