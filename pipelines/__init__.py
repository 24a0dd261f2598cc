"""The kubedetect Kubeflow pipeline: its DAG, how to compile and submit it, and local runs."""
