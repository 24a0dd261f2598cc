"""Kubeflow Pipelines components: small typed functions over the kubedetect library.

Each component is a plain function with `Input[...]`/`Output[...]` artifacts; the pipeline turns
them into KFP components on the trainer image (`pipelines/pipeline.py`). The Kubernetes-specific
work (TFJobs, Deployment rollouts) lives here too, not in the core library.
"""
