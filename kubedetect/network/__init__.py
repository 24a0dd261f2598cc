"""The Keras network and what becomes of it: built (`architecture`), given initial weights
(`weights`), trained with one-op batch normalization (`batchnorm`), exported as a self-describing
model folder (`export`) and converted to TFLite variants (`quantize`).

TensorFlow lives here and in `training`; `quantize` measures its variants with `inference` and
`evaluation`. Nothing here imports `training`.
"""
