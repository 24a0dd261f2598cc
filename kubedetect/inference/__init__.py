"""Running a model folder: the one decode from output maps to boxes (`decode`), the LiteRT
interpreter (`runtime`), any model folder as a detector (`detectors`), ensembles and their box
fusion (`ensemble`, `fusion`), and the registry where deployed models are found (`registry`).

TensorFlow-free (the interpreter is LiteRT): serving imports these, and only these and `io`.
"""
