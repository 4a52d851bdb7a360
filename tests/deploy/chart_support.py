"""The Helm chart rendered offline with Helm's own engine (the Helm 4 SDK, no helm binary, no cluster)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "pdeserve"
GPU_VALUES = CHART / "ci" / "gpu-autoscaling-values.yaml"
RELEASE, NAMESPACE = "demo", "solvers"


def chart_values(case: str) -> dict:
    """The values of a rendering case: the chart's defaults, its CI values file, or overrides that turn
    on the templates the two files leave off (claims, retraining, a ServiceMonitor, authentication)."""
    cases = {
        "default": {},
        "gpu-autoscaling": yaml.safe_load(GPU_VALUES.read_text()),
        "pvc-cronjob-servicemonitor": {
            "modelStorage": {"type": "pvc", "pvc": {"storageClassName": "nfs-client"}},
            "retrain": {"enabled": True, "extraArgs": ["--max-regression", 0.01]},
            "monitoring": {"enabled": True, "kind": "ServiceMonitor"},
            "serviceAccount": {"create": True},
            "imagePullSecrets": [{"name": "registry"}],
            "auth": {"existingSecret": "pdeserve-token", "secretKey": "token"},
        },
        "claim-job-gpu-retrain": {
            "modelStorage": {"type": "existingClaim", "existingClaim": "shared-models"},
            "retrain": {"enabled": True, "schedule": "", "gpu": True, "device": "cuda"},
            "gpuWorkers": {"enabled": True},
            "cpuWorkers": {"enabled": False},
        },
    }
    return cases[case]


CASES = ["default", "gpu-autoscaling", "pvc-cronjob-servicemonitor", "claim-job-gpu-retrain"]


def render(values: dict) -> list[dict]:
    """Every object the chart renders with ``values`` (NOTES.txt left out)."""
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for name, text in sorted(manifests.items())
        if not name.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict], kind: str, name: str) -> dict:
    """The one object of ``kind`` called ``name``."""
    (found,) = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found
