"""kubedetect: Pascal VOC folders in, a served, quantized object detector out.

The core library. It knows nothing of Kubeflow, Flask or Kubernetes: the adapters in
`components/`, `pipelines/` and `serving/` are thin layers over it. Importing this package
is cheap; TensorFlow is imported only by the modules that train, evaluate or convert models.
"""

__version__ = "0.1.0"
