"""Custom resources checked against their projects' own schemas; run by the KServe virtualenv.

    .venv-kserve/bin/python tests/k8s_schemas.py MANIFEST.yaml

Prints one JSON list per YAML document of MANIFEST: the schema errors found in it (empty when it
validates), for tests/test_k8s_kserve.py. Not collected by pytest (no test_ prefix).

The schemas are the ones the projects generate from their CRDs' Go types and publish on PyPI,
installed by bench/kserve/setup-venv.sh, nothing copied into this repository:
- InferenceService: the `kserve` wheel's API models (kserve.models, OpenAPI-generated: each
  class lists its fields, their JSON names and types), down to the Kubernetes types they embed,
  which kubernetes 37's client models define as pydantic models refusing unknown fields;
- PodMonitor: the `cloudcoil-models-prometheus-operator` wheel's pydantic models, generated from
  the Prometheus Operator's CRDs.
Both are checked the way `kubectl apply --validate=strict` checks: an unknown field (a typo that
the API server would silently drop) is an error, as are a wrong type and a missing required
field.
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing

import kserve.models as kserve_models
import kubernetes.client.models as kubernetes_models
import pydantic
import yaml
from cloudcoil.models.prometheus_operator import v1 as prometheus

KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("monitoring.coreos.com/v1", "PodMonitor"): prometheus.PodMonitor,
}
PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool, "object": object}


def openapi_errors(value, type_name: str, path: str) -> list[str]:
    """Errors of `value` against an OpenAPI-generated type of the kserve wheel (or a type it
    names: a list, a map, a primitive, a Kubernetes type)."""
    if value is None:
        return []
    inner = re.fullmatch(r"(?:list|List)\[(.*)\]", type_name)
    if inner:
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [e for i, v in enumerate(value) for e in openapi_errors(v, inner[1], f"{path}[{i}]")]
    inner = re.fullmatch(r"(?:dict|Dict)\((?:str|str), (.*)\)|Dict\[str, (.*)\]", type_name)
    if inner:
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        of = inner[1] or inner[2]
        return [e for k, v in value.items() for e in openapi_errors(v, of, f"{path}.{k}")]
    if type_name in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[type_name]) and not (
            type_name in ("int", "float") and isinstance(value, bool)
        )
        return [] if ok else [f"{path}: expected {type_name}, got {value!r}"]
    cls = getattr(kserve_models, type_name, None) or getattr(kubernetes_models, type_name, None)
    if cls is None:
        return [f"{path}: no schema for type {type_name}"]
    if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
        return pydantic_errors(cls, value, path)
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({type_name})"]
    by_json = {json_name: name for name, json_name in cls.attribute_map.items()}
    errors = [f"{path}.{key}: unknown field of {type_name}" for key in value if key not in by_json]
    for key, item in value.items():
        if key in by_json:
            errors += openapi_errors(item, cls.openapi_types[by_json[key]], f"{path}.{key}")
    try:  # the generated constructor refuses a missing required field or a value not allowed
        cls(**{by_json[k]: v for k, v in value.items() if k in by_json})
    except (ValueError, TypeError) as exc:
        errors.append(f"{path}: {exc}")
    return errors


def pydantic_errors(cls: type[pydantic.BaseModel], value, path: str) -> list[str]:
    """Errors of `value` against a pydantic model: its own validation, and unknown fields
    (which cloudcoil's models would otherwise ignore)."""
    errors = [f"{path}.{key}" for key in unknown_fields(cls, value)]
    errors = [f"{where}: unknown field" for where in errors]
    try:
        cls.model_validate(value)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            if error["type"] != "extra_forbidden":  # reported above, with the path
                where = ".".join(str(p) for p in error["loc"])
                errors.append(f"{path}.{where}: {error['msg']}")
    return errors


def unknown_fields(cls, value) -> list[str]:
    """Paths (below `value`) of keys that no field of the model, or of the models inside it,
    names by its JSON name."""
    if isinstance(value, list):
        return [f"[{i}].{p}" for i, v in enumerate(value) for p in unknown_fields(cls, v)]
    if not (isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)):
        return []
    if not isinstance(value, dict):
        return []
    fields = {key: f for name, f in cls.model_fields.items() for key in names(name, f)}
    found = []
    for key, item in value.items():
        if key not in fields:
            found.append(key)
            continue
        for inner in models_in(fields[key].annotation):
            found += [
                key + ("" if p.startswith("[") else ".") + p for p in unknown_fields(inner, item)
            ]
    return found


def names(name: str, field) -> list[str]:
    """The keys a field is given by: its name, its alias, the choices of its validation alias
    (the Kubernetes models take `imagePullPolicy` and `image_pull_policy` alike)."""
    found = [name, field.alias]
    alias = field.validation_alias
    found += alias.choices if isinstance(alias, pydantic.AliasChoices) else [alias]
    return [n for n in found if isinstance(n, str)]


def models_in(annotation) -> list:
    """The pydantic models an annotation holds (Optional[List[X]] -> [X]; Dict[str, X] -> [X])."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (dict, typing.Dict) and len(args) == 2:  # noqa: UP006
        return [m for m in models_in(args[1])]
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType, typing.Annotated):
        return [m for a in args for m in models_in(a)]
    return []


def validate(document: dict) -> list[str]:
    schema = KINDS.get((document.get("apiVersion"), document.get("kind")))
    if schema is None:
        return [f"no schema here for {document.get('apiVersion')} {document.get('kind')}"]
    if isinstance(schema, str):
        return openapi_errors(document, schema, document["kind"])
    return pydantic_errors(schema, document, document["kind"])


if __name__ == "__main__":
    with open(sys.argv[1]) as manifest:
        print(json.dumps([validate(document) for document in yaml.safe_load_all(manifest)]))
