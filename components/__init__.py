"""Kubeflow Pipelines components: small typed functions over the kubedetect library.

One component per file, named after it, in the order the pipeline runs them: `plan_shards`,
`preprocess_shard` (the ParallelFor), `merge_shards`, `plan_candidates`, `train` (a ParallelFor
over candidates, each a TFJob or local workers), `select_candidates`, `evaluate`, `quantize`,
`quality_gate`, `deploy`. Each is a plain function with `Input[...]`/`Output[...]` artifacts; the
pipeline turns them into KFP components on the trainer image (`pipelines/pipeline.py`).

The rest are the components' helpers, the Kubernetes-specific work the core library never does:
`tfjob` (build, submit, follow and clean up a TFJob), `rollout` (a Deployment's model, rolled and
undone), `inferenceservice` (the same for a KServe InferenceService), `steppod` (the pod a step
runs in), `apierrors` (Kubernetes API errors in one line), `html` (the pages the KFP UI shows).
"""
