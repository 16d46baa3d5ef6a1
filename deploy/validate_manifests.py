"""Checks deploy/raycluster.yaml and deploy/rayjob-nightly.yaml against KubeRay's CRD schemas, offline.

    python deploy/validate_manifests.py CRD_DIR

CRD_DIR holds ``ray.io_rayclusters.yaml`` and ``ray.io_rayjobs.yaml`` (from
``ray-operator/config/crd/bases`` of a KubeRay release). The CRDs' OpenAPI v3
schemas are checked with ``jsonschema``; an object without
``x-kubernetes-preserve-unknown-fields`` is closed, so a misspelt field is an
error here, as the API server's strict field validation would make it.
Exit 1 lists each error.
"""
from __future__ import annotations

import sys
from pathlib import Path

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
CHECKS = (("ray.io_rayclusters.yaml", "raycluster.yaml"), ("ray.io_rayjobs.yaml", "rayjob-nightly.yaml"))


def _schema(crd: Path, version: str = "v1") -> dict:
    (v,) = [v for v in yaml.safe_load(crd.read_text())["spec"]["versions"] if v["name"] == version]
    return _structural(v["schema"]["openAPIV3Schema"])


def _structural(s):
    """The OpenAPI extensions as JSON Schema: int-or-string, and closed objects."""
    if isinstance(s, list):
        return [_structural(x) for x in s]
    if not isinstance(s, dict):
        return s
    s = {k: _structural(v) for k, v in s.items()}
    if s.get("x-kubernetes-int-or-string"):
        s.pop("type", None)
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if s.get("type") == "object" and "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields"):
        s.setdefault("additionalProperties", False)
    return s


def main(crd_dir: str) -> int:
    bad = 0
    for crd, manifest in CHECKS:
        errors = list(jsonschema.Draft7Validator(_schema(Path(crd_dir) / crd)).iter_errors(
            yaml.safe_load((HERE / manifest).read_text())))
        print(f"{manifest}: {'valid' if not errors else f'{len(errors)} errors'}")
        for e in errors:
            print(f"  {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}")
        bad += len(errors)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    sys.exit(main(sys.argv[1]))
