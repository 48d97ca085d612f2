"""Paths and names shared by the deployment tests' conftest and test modules."""

from pathlib import Path

K8S = Path(__file__).resolve().parents[2] / "k8s"
OVERLAYS = ("postgres", "external-postgres")
# The overlays name the HPA component in a comment; this build enables it the way docs/deploy.md says.
HPA_BUILD = "postgres+hpa"
HPA_LINE = "# - ../../components/hpa"
BUILDS = (*OVERLAYS, HPA_BUILD)

Manifest = dict
