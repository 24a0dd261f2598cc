"""Running a model folder: the one decode from output maps to boxes (`decode`), the LiteRT
interpreter (`runtime`), any model folder as a detector (`detectors`), ensembles and their box
fusion (`ensemble`, `fusion`), and the registry where deployed models are found (`registry`).

It imports `io` and the shared modules only. TensorFlow-free (the interpreter is LiteRT), but for
`detectors.KerasDetector`, which imports Keras when it loads a training export: serving imports
this part, and of the core only this, `io` and the shared modules.
"""
