"""Write tests/deploy/schemas/*.json: the upstream CRD schemas cut down to the fields our objects use.

    python scripts/crd_subset.py --mirror /work/.mirror

Each schema is taken from an upstream CRD at a named release tag (UPSTREAM below), read from a local
clone with `git show <tag>:<path>`. It keeps, for every field the RGD or the objects it renders use,
the upstream type, enum, pattern, bounds and required list, drops the descriptions, and sets
`additionalProperties: false` on every object it keeps, so a field upstream does not have, or one we
have not cut from upstream, is refused by tests/deploy/test_deploy_upstream_schemas.py. A field we
use that the upstream CRD does not define stops this script, naming it.

Run it again when the RGD starts using a new field, or to move to a newer upstream release.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "tests" / "deploy" / "schemas"
sys.path.insert(0, str(ROOT / "tests" / "deploy"))

# (schema file, mirror folder, repository, tag, CRD path, version served)
UPSTREAM = {
    "RayService": ("ray-project+kuberay", "ray-project/kuberay", "v1.7.0",
                   "ray-operator/config/crd/bases/ray.io_rayservices.yaml", "v1"),
    "Role": ("aws-controllers-k8s+iam-controller", "aws-controllers-k8s/iam-controller", "v1.8.1",
             "config/crd/bases/iam.services.k8s.aws_roles.yaml", "v1alpha1"),
    "PodIdentityAssociation": ("aws-controllers-k8s+eks-controller", "aws-controllers-k8s/eks-controller", "v1.20.0",
                               "config/crd/bases/eks.services.k8s.aws_podidentityassociations.yaml", "v1alpha1"),
    "ResourceGraphDefinition": ("kubernetes-sigs+kro", "kubernetes-sigs/kro", "v0.9.3",
                                "helm/crds/kro.run_resourcegraphdefinitions.yaml", "v1alpha1"),
}  # fmt: skip
# Structural facts kept from the upstream schema; descriptions and defaults are not ours to copy.
KEPT = ("type", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "format")


class NotUpstream(Exception):
    """A field we use that the upstream CRD does not define."""


def subset(schema: dict[str, Any], instances: list[Any], where: str) -> dict[str, Any]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        # Upstream leaves this subtree open (kro's schema and templates): so do we.
        return {key: schema[key] for key in ("type",) if key in schema}
    out: dict[str, Any] = {key: schema[key] for key in KEPT if key in schema}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema:
        used = sorted({key for instance in instances if isinstance(instance, dict) for key in instance})
        properties = {}
        for key in used:
            if key not in schema["properties"]:
                raise NotUpstream(f"{where}.{key} is not in the upstream CRD")
            values = [instance[key] for instance in instances if isinstance(instance, dict) and key in instance]
            properties[key] = subset(schema["properties"][key], values, f"{where}.{key}")
        out["properties"] = properties
        out["additionalProperties"] = False
        # The API server fills a defaulted field before it validates, so only the others are required.
        required = [key for key in schema.get("required", []) if "default" not in schema["properties"].get(key, {})]
        if required:
            out["required"] = required
    elif isinstance(schema.get("additionalProperties"), dict):
        values = [value for instance in instances if isinstance(instance, dict) for value in instance.values()]
        out["additionalProperties"] = subset(schema["additionalProperties"], values, f"{where}.*")
    if "items" in schema:
        elements = [element for instance in instances if isinstance(instance, list) for element in instance]
        out["items"] = subset(schema["items"], elements, f"{where}[]")
    return out


def upstream_schema(mirror: Path, kind: str) -> tuple[dict[str, Any], dict[str, str]]:
    folder, repository, tag, path, version = UPSTREAM[kind]
    clone = mirror / folder / "repo"
    text = subprocess.run(["git", "-C", str(clone), "show", f"{tag}:{path}"], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", f"{tag}^{{commit}}"], check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    crd = yaml.safe_load(text)
    served = next(entry for entry in crd["spec"]["versions"] if entry["name"] == version)
    source = {"repository": repository, "tag": tag, "commit": commit, "path": path, "version": version}
    return served["schema"]["openAPIV3Schema"], source


def our_objects() -> dict[str, list[dict[str, Any]]]:
    """Every object kind the RGD renders, across the instances the deploy tests render, plus the RGD."""
    from test_deploy_upstream_schemas import rendered_objects

    objects: dict[str, list[dict[str, Any]]] = {kind: [] for kind in UPSTREAM}
    for obj in rendered_objects():
        if obj["kind"] in objects:
            objects[obj["kind"]].append(obj)
    return objects


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path, required=True, help="folder holding <owner>+<name>/repo clones")
    args = parser.parse_args(list(argv) if argv is not None else None)
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    for kind, instances in our_objects().items():
        schema, source = upstream_schema(args.mirror, kind)
        try:
            cut = subset(schema, instances, kind)
        except NotUpstream as exc:
            print(f"crd_subset: {exc} ({source['repository']} {source['tag']} {source['path']})", file=sys.stderr)
            return 1
        document = {"$schema": "https://json-schema.org/draft/2020-12/schema", "x-upstream": source, **cut}
        target = SCHEMAS / f"{kind}.json"
        target.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        print(f"{target.relative_to(ROOT)}: {source['repository']} {source['tag']} ({len(instances)} objects)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
