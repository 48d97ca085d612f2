"""The k8s/ manifests: they build, validate offline against the Kubernetes schemas, and keep the
properties the deployment relies on (docs/deploy.md)."""

import copy
import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from deploy_support import HPA_BUILD, K8S, OVERLAYS, Manifest
from pydantic import BaseModel

# The oldest Kubernetes release docs/deploy.md supports, and the newest whose schemas are installed.
MIN_KUBERNETES = "1.30.0"
NAMESPACE = "m2n2"
ENTRY, EVOLVER = "m2n2-entry", "m2n2-evolver"
DASHBOARD = K8S / "base" / "monitoring" / "m2n2-dashboard.json"
SERVICEMONITOR_SCHEMA = Path(__file__).with_name("servicemonitor.schema.json")
SECRET_NAMES = re.compile(r"TOKEN|PASSWORD|SECRET")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


# --- helpers ---------------------------------------------------------------------------------------


def kinds(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in kinds(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(workload: Manifest) -> dict:
    return workload["spec"]["template"]["spec"]


def main_container(workload: Manifest) -> dict:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']} should run one container"
    return containers[0]


def env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def env_value(container: dict, name: str) -> str:
    entry = env(container).get(name)
    assert entry is not None and "value" in entry, f"{container['name']} sets no literal {name}"
    return entry["value"]


def mounts(workload: Manifest, container: dict) -> dict[str, dict]:
    """mountPath -> the volume mounted there."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels / matchExpressions, or a Service's plain map) matches ``labels``."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op, values = labels.get(expr["key"]), expr["operator"], expr.get("values", [])
        if (
            (op == "In" and value not in values)
            or (op == "NotIn" and value in values)
            or (op == "Exists" and value is None)
            or (op == "DoesNotExist" and value is not None)
        ):
            return False
    return True


def app_deployments(manifests: list[Manifest]) -> tuple[Manifest, Manifest]:
    return one(manifests, "Deployment", ENTRY), one(manifests, "Deployment", EVOLVER)


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}]


def validate_servicemonitor(doc: Manifest) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with kubernetes-validate (dev extra)")
    schema = json.loads(SERVICEMONITOR_SCHEMA.read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)


# --- build and schemas -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [MIN_KUBERNETES, "newest"])
def test_manifests_validate_against_kubernetes_schemas(manifests: list[Manifest], version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra")
    if version == "newest":
        version = kv.utils.latest_version()
    errors = []
    for doc in manifests:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "ServiceMonitor":
            # A CRD: kubernetes-validate has no schema for it; servicemonitor.schema.json checks it below.
            validate_servicemonitor(doc)
            continue
        try:
            kv.validate(doc, version, strict=True)  # strict: unknown fields (typos) are errors
        except kv.ValidationError as e:
            errors.append(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
        except kv.SchemaNotFoundError as e:
            errors.append(f"{name}: {e.message}")
    assert not errors, "\n".join(errors)


def test_schema_validation_catches_a_misspelt_field(builds: dict[str, list[Manifest]]) -> None:
    """The validation above is not vacuous: a misspelt field fails it."""
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra")
    entry = copy.deepcopy(one(builds["postgres"], "Deployment", ENTRY))
    container = main_container(entry)
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kv.ValidationError, match="readinesProbe"):
        kv.validate(entry, MIN_KUBERNETES, strict=True)
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with kubernetes-validate (dev extra)")
    monitor = copy.deepcopy(one(builds["postgres"], "ServiceMonitor", "m2n2"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validate_servicemonitor(monitor)


def test_every_object_is_in_the_overlay_namespace(manifests: list[Manifest]) -> None:
    for doc in manifests:
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"


def test_no_secret_is_committed(manifests: list[Manifest]) -> None:
    """Secrets are created by the operator (kubectl create secret), never rendered from the repository."""
    assert not kinds(manifests, "Secret")
    for workload in workloads(manifests):
        spec = pod_spec(workload)
        for container in spec["containers"] + spec.get("initContainers", []):
            for name, entry in env(container).items():
                if SECRET_NAMES.search(name):
                    assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name} must come from a Secret"


# --- the evolver is a singleton ----------------------------------------------------------------------


def test_evolver_is_a_single_replica_recreated(manifests: list[Manifest]) -> None:
    evolver = one(manifests, "Deployment", EVOLVER)
    assert evolver["spec"]["replicas"] == 1
    assert evolver["spec"]["strategy"] == {"type": "Recreate"}
    evolver_pods = evolver["spec"]["template"]["metadata"]["labels"]
    for hpa in kinds(manifests, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] != EVOLVER
    for pdb in kinds(manifests, "PodDisruptionBudget"):
        assert not selects(pdb["spec"]["selector"], evolver_pods), "a PDB on one replica only blocks node drains"


def test_evolver_serves_only_the_evolver_service(manifests: list[Manifest]) -> None:
    entry, evolver = app_deployments(manifests)
    args = main_container(evolver)["args"]
    assert args[0] == "start-http-server"
    assert "--service-name" in args
    assert "M2N2_SERVICE__EVOLVER_URL" not in env(main_container(evolver)), "the evolver pod is the evolver"
    assert "--service-name" not in main_container(entry).get("args", [])


def test_service_names_match_the_bento(builds: dict[str, list[Manifest]]) -> None:
    """The evolver pod's --service-name names a BentoML service declared in service/."""
    declared = set()
    for source in (K8S.parent / "service").glob("*.py"):
        declared |= set(re.findall(r"@bentoml\.service\(\s*name\s*=\s*[\"']([^\"']+)[\"']", source.read_text()))
    if not declared:
        pytest.skip("service/ declares no named BentoML service yet")
    args = main_container(one(builds["postgres"], "Deployment", EVOLVER))["args"]
    name = args[args.index("--service-name") + 1]
    assert name in declared, f"--service-name {name}: service/ declares {sorted(declared)}"


# --- the entry service ---------------------------------------------------------------------------------


def test_entry_probes(manifests: list[Manifest]) -> None:
    container = main_container(one(manifests, "Deployment", ENTRY))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 3000}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez"), ("startupProbe", "/livez")):
        assert container[probe]["httpGet"]["path"] == path, probe
        assert container[probe]["httpGet"]["port"] in ("http", 3000), probe
    startup = container["startupProbe"]
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert budget >= 600, f"the startup probe allows {budget} s for loading a champion; large models need minutes"


def test_entry_reaches_the_evolver_through_its_service(manifests: list[Manifest]) -> None:
    url = urlsplit(env_value(main_container(one(manifests, "Deployment", ENTRY)), "M2N2_SERVICE__EVOLVER_URL"))
    service = one(manifests, "Service", EVOLVER)
    assert url.scheme == "http"
    assert url.hostname in {EVOLVER, f"{EVOLVER}.{NAMESPACE}", f"{EVOLVER}.{NAMESPACE}.svc"}
    assert url.port in {p["port"] for p in service["spec"]["ports"]}


def test_entry_scaling(manifests: list[Manifest]) -> None:
    entry = one(manifests, "Deployment", ENTRY)
    pdb = one(manifests, "PodDisruptionBudget", ENTRY)
    assert selects(pdb["spec"]["selector"], entry["spec"]["template"]["metadata"]["labels"])
    if hpas := kinds(manifests, "HorizontalPodAutoscaler"):
        (hpa,) = hpas
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": ENTRY}
        assert hpa["spec"]["minReplicas"] >= 2
        assert "replicas" not in entry["spec"], "the autoscaler owns the replica count"
    else:
        assert entry["spec"]["replicas"] >= 2


def test_hpa_is_an_opt_in_component(builds: dict[str, list[Manifest]]) -> None:
    assert kinds(builds[HPA_BUILD], "HorizontalPodAutoscaler")
    for overlay in OVERLAYS:
        assert not kinds(builds[overlay], "HorizontalPodAutoscaler"), overlay


# --- security and storage -----------------------------------------------------------------------------


def test_containers_run_as_non_root_on_a_read_only_root(manifests: list[Manifest]) -> None:
    for workload in workloads(manifests):
        spec = pod_spec(workload)
        pod = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{workload['metadata']['name']}/{container['name']}"
            security = {**pod, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, where
            # Numeric and non-zero: the bento image names its user, which the kubelet cannot check.
            assert isinstance(security.get("runAsUser"), int) and security["runAsUser"] > 0, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in security.get("capabilities", {}).get("drop", []), where
            assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


def test_bentoml_writes_only_to_volumes(manifests: list[Manifest]) -> None:
    """BentoML's home (with its Prometheus multiprocess directory), /tmp and the caches are emptyDirs."""
    for deployment in app_deployments(manifests):
        container = main_container(deployment)
        mounted = mounts(deployment, container)
        assert "emptyDir" in mounted["/tmp"]
        home = env_value(container, "BENTOML_HOME")
        assert "emptyDir" in mounted[home], "BENTOML_HOME must be a writable emptyDir"
        for variable in ("XDG_CACHE_HOME", "MPLCONFIGDIR"):
            path = Path(env_value(container, variable))
            assert any(path.is_relative_to(m) for m, v in mounted.items() if "emptyDir" in v), variable


def test_both_deployments_share_one_read_write_many_claim(manifests: list[Manifest]) -> None:
    claims = set()
    for deployment in app_deployments(manifests):
        container = main_container(deployment)
        data_dir = env_value(container, "M2N2_DATA_DIR")
        volume = mounts(deployment, container)[data_dir]
        claims.add(volume["persistentVolumeClaim"]["claimName"])
    assert len(claims) == 1, f"the entry service and the evolver mount different claims: {claims}"
    claim = one(manifests, "PersistentVolumeClaim", claims.pop())
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_admin_token_comes_from_a_secret(manifests: list[Manifest]) -> None:
    token = env(main_container(one(manifests, "Deployment", ENTRY)))["M2N2_ADMIN_TOKEN"]
    assert "value" not in token
    ref = token["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "m2n2-admin" and ref["key"] == "token"
    assert ref.get("optional", False) is False, "without the Secret the pods must not start unprotected"


def test_both_deployments_use_the_database(manifests: list[Manifest]) -> None:
    """M2N2_STORE__URL is set in both, and a $(VAR) it uses comes earlier in the list, from a Secret."""
    for deployment in app_deployments(manifests):
        container = main_container(deployment)
        variables = [e["name"] for e in container["env"]]
        url = env(container)["M2N2_STORE__URL"]
        if "value" not in url:
            assert "secretKeyRef" in url["valueFrom"]
            continue
        assert url["value"].startswith("postgresql+psycopg://")
        for ref in VAR_REF.findall(url["value"]):
            assert ref in variables[: variables.index("M2N2_STORE__URL")], f"$({ref}) must be defined before use"
            assert "secretKeyRef" in env(container)[ref]["valueFrom"]


def test_settings_exist_and_validate(manifests: list[Manifest], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every M2N2_ variable the manifests set is a real setting, and the settings load with their values."""
    from ecosystem.settings import Settings

    for deployment in app_deployments(manifests):
        container = main_container(deployment)
        values = {}
        for source in container.get("envFrom", []):
            values |= one(manifests, "ConfigMap", source["configMapRef"]["name"])["data"]
        for name, entry in env(container).items():
            if "value" in entry:
                values[name] = VAR_REF.sub("placeholder", entry["value"])
            elif name == "M2N2_STORE__URL":
                values[name] = "postgresql+psycopg://user:password@database:5432/m2n2"
            else:
                values[name] = "placeholder"
        settings = {name: value for name, value in values.items() if name.startswith("M2N2_")}
        for name in settings:
            assert setting_exists(Settings, name), f"{deployment['metadata']['name']}: {name} is no setting"
        with monkeypatch.context() as patch:
            for name in [n for n in os.environ if n.startswith("M2N2_")]:
                patch.delenv(name)
            for name, value in settings.items():
                patch.setenv(name, value)
            Settings()  # raises a ValidationError naming the field


def setting_exists(model: type[BaseModel], variable: str) -> bool:
    *groups, leaf = variable.removeprefix("M2N2_").lower().split("__")
    for group in groups:
        field = model.model_fields.get(group)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return False
        model = field.annotation
    return leaf in model.model_fields


# --- services and monitoring ----------------------------------------------------------------------------


def test_services_select_their_pods(manifests: list[Manifest]) -> None:
    pods = {w["metadata"]["name"]: w for w in workloads(manifests)}
    for service in kinds(manifests, "Service"):
        matched = [
            w
            for w in pods.values()
            if selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matched) == 1, (
            f"Service {service['metadata']['name']} selects {[m['metadata']['name'] for m in matched]}"
        )
        names = {p.get("name") for c in pod_spec(matched[0])["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"{service['metadata']['name']}: no container port {port['targetPort']}"


def test_servicemonitor_scrapes_both_services(manifests: list[Manifest]) -> None:
    monitor = one(manifests, "ServiceMonitor", "m2n2")
    scraped = {
        s["metadata"]["name"]: s
        for s in kinds(manifests, "Service")
        if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
    }
    assert set(scraped) == {ENTRY, EVOLVER}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        for service in scraped.values():
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_grafana_dashboard_config_map(manifests: list[Manifest]) -> None:
    config_map = one(manifests, "ConfigMap", "m2n2-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    text = DASHBOARD.read_text(encoding="utf-8")
    assert config_map["data"] == {DASHBOARD.name: text}
    dashboard = json.loads(text)
    assert isinstance(dashboard.get("title"), str) and dashboard["title"]
    assert isinstance(dashboard.get("panels"), list) and dashboard["panels"]
    # A ConfigMap holds at most 1 MiB; docs/deploy.md applies server-side, so the 256 KiB
    # last-applied annotation of client-side apply is no limit.
    assert len(text.encode()) < 1_000_000
