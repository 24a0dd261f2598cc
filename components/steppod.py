"""The pipeline step's own pod, as the downward API describes it to the step.

The pipeline sets three variables on the cluster steps (kfp-kubernetes `use_field_path_as_env`):
the pod's name, uid and namespace. The train step names its pod as the owner of the TFJob it
creates, so that Kubernetes' garbage collector deletes the job (and its GPU pods) when the pod
is deleted, whatever happened to the step's own clean-up. Both cluster steps check that they run
in the namespace they were compiled for: a step mounts the workspace PVC of its own namespace,
and a TFJob or Deployment elsewhere would see another volume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from kubedetect.errors import KubedetectError

FIELDS = {  # environment variable: field path
    "KUBEDETECT_POD_NAME": "metadata.name",
    "KUBEDETECT_POD_UID": "metadata.uid",
    "KUBEDETECT_POD_NAMESPACE": "metadata.namespace",
}


@dataclass(frozen=True)
class StepPod:
    name: str
    uid: str
    namespace: str

    @classmethod
    def from_env(cls, environ=None) -> StepPod | None:
        """The pod, or None outside one (kfp.local, a shell) or without the downward API."""
        environ = os.environ if environ is None else environ
        values = [environ.get(name, "").strip() for name in FIELDS]
        return cls(*values) if all(values) else None

    def require_namespace(self, namespace: str) -> None:
        """Refuse to act on another namespace than the step's own (see the module docstring)."""
        if self.namespace != namespace:
            raise KubedetectError(
                f"this step runs in namespace {self.namespace!r}, but the pipeline was compiled "
                f"for --namespace {namespace!r}: the TFJob and the serving Deployment there mount "
                f"another workspace volume than this step's. Compile with --namespace "
                f"{self.namespace} (and install k8s/ into it), or run the pipeline there."
            )

    def owner_reference(self) -> dict:
        """An ownerReference to this pod. Not a controller reference, and not blocking the pod's
        deletion (that would need update rights on pods/finalizers): the garbage collector
        deletes the dependent once every owner is gone."""
        return {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}
