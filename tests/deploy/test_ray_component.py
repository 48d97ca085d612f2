"""k8s/components/ray: a KubeRay RayCluster (head plus GPU workers) the evolver scores its children on.

Rendered with the postgres overlay the way docs/deploy.md enables it, validated offline (the RayCluster
against raycluster.schema.json, a subset of KubeRay's CRD, and its pod templates and every other object
against the Kubernetes schemas), and checked for what the Ray evaluator relies on.
"""

import copy
import json
import shutil
from pathlib import Path

import pytest
from deploy_support import K8S, Manifest

NAMESPACE = "m2n2"
RAY_LINE = "# - ../../components/ray"
SCHEMA = Path(__file__).with_name("raycluster.schema.json")
MIN_KUBERNETES = "1.30.0"


@pytest.fixture(scope="module")
def rendered(kustomize, tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    copied = tmp_path_factory.mktemp("k8s-ray") / "k8s"
    shutil.copytree(K8S, copied)
    kustomization = copied / "overlays" / "postgres" / "kustomization.yaml"
    text = kustomization.read_text()
    assert RAY_LINE in text, f"overlays/postgres/kustomization.yaml no longer offers the Ray component as {RAY_LINE!r}"
    kustomization.write_text(text.replace(RAY_LINE, RAY_LINE.removeprefix("# ")))
    return kustomize(copied / "overlays" / "postgres")


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def validate_raycluster(doc: Manifest) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with kubernetes-validate (dev extra)")
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(doc)


def pod_templates(cluster: Manifest) -> dict[str, dict]:
    spec = cluster["spec"]
    return {"head": spec["headGroupSpec"]["template"]} | {
        g["groupName"]: g["template"] for g in spec.get("workerGroupSpecs", [])
    }


def test_the_component_validates_offline(rendered: list[Manifest]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra")
    errors = []
    for doc in rendered:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "ServiceMonitor":
            continue  # test_k8s_manifests checks it against its own schema
        if doc["kind"] == "RayCluster":
            validate_raycluster(doc)
            for group, template in pod_templates(doc).items():
                as_core = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group}, "template": template}
                try:
                    kv.validate(as_core, MIN_KUBERNETES, strict=True)
                except kv.ValidationError as e:
                    errors.append(f"{name} {group} template: {'.'.join(map(str, e.path))}: {e.message}")
            continue
        try:
            kv.validate(doc, MIN_KUBERNETES, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
    assert not errors, "\n".join(errors)


def test_the_validation_catches_misspelt_fields(rendered: list[Manifest]) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with kubernetes-validate (dev extra)")
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra")
    cluster = one(rendered, "RayCluster", "m2n2-ray")
    for path in (("spec",), ("spec", "headGroupSpec"), ("spec", "workerGroupSpecs", 0)):
        broken = copy.deepcopy(cluster)
        node = broken
        for key in path:
            node = node[key]
        node["replicaz"] = 1
        with pytest.raises(jsonschema.ValidationError, match="replicaz"):
            validate_raycluster(broken)
    template = copy.deepcopy(pod_templates(cluster)["gpu"])
    template["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kv.ValidationError, match="volumeMount"):
        kv.validate(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": template},
            MIN_KUBERNETES,
            strict=True,
        )


def test_the_evolver_points_at_the_clusters_head(rendered: list[Manifest]) -> None:
    cluster = one(rendered, "RayCluster", "m2n2-ray")
    assert cluster["metadata"]["namespace"] == NAMESPACE
    evolver = env(one(rendered, "Deployment", "m2n2-evolver")["spec"]["template"]["spec"]["containers"][0])
    # KubeRay's head Service is <cluster name>-head-svc; Ray Client listens on 10001.
    assert evolver["M2N2_EVOLUTION__RAY_ADDRESS"] == f"ray://{cluster['metadata']['name']}-head-svc:10001"
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert 10001 in {p["containerPort"] for p in head["ports"]}
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "no evaluator runs on the head"


def test_gpu_workers_fit_the_evaluator_actors(rendered: list[Manifest]) -> None:
    cluster = one(rendered, "RayCluster", "m2n2-ray")
    evolver = env(one(rendered, "Deployment", "m2n2-evolver")["spec"]["template"]["spec"]["containers"][0])
    (gpu,) = cluster["spec"]["workerGroupSpecs"]
    worker = gpu["template"]["spec"]["containers"][0]
    gpus_per_worker = int(worker["resources"]["limits"]["nvidia.com/gpu"])
    per_actor = float(evolver["M2N2_EVOLUTION__RAY_ACTOR_GPUS"])
    assert per_actor == 1
    assert int(evolver["M2N2_EVOLUTION__RAY_ACTORS"]) * per_actor <= gpu["replicas"] * gpus_per_worker
    assert int(evolver["M2N2_EVOLUTION__BATCH"]) % int(evolver["M2N2_EVOLUTION__RAY_ACTORS"]) == 0


def test_workers_read_children_where_the_evolver_writes_them(rendered: list[Manifest]) -> None:
    cluster = one(rendered, "RayCluster", "m2n2-ray")
    evolver_pod = one(rendered, "Deployment", "m2n2-evolver")["spec"]["template"]["spec"]
    evolver = evolver_pod["containers"][0]
    data_dir = env(evolver)["M2N2_DATA_DIR"]
    claim = {v["name"]: v for v in evolver_pod["volumes"]}
    evolver_claim = next(
        claim[m["name"]]["persistentVolumeClaim"]["claimName"]
        for m in evolver["volumeMounts"]
        if m["mountPath"] == data_dir
    )
    gpu_pod = cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    volumes = {v["name"]: v for v in gpu_pod["volumes"]}
    mounts = {m["mountPath"]: m for m in gpu_pod["containers"][0]["volumeMounts"]}
    assert data_dir in mounts, "children travel as paths: the workers mount the data directory at the same path"
    assert mounts[data_dir].get("readOnly") is True, "the evolver alone writes the store"
    assert volumes[mounts[data_dir]["name"]]["persistentVolumeClaim"]["claimName"] == evolver_claim
    images = {c["image"] for t in pod_templates(cluster).values() for c in t["spec"]["containers"]}
    assert images == {evolver["image"]}, "Ray pods run the evolver's image (same Python, packages and Ray)"
