"""helm/pdeserve: linted, rendered and validated without a cluster.

Core objects validate against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown
fields fail), the RayService against KubeRay's CRD, its serveConfigV2 against Ray Serve's own schema
and the installed package, and the Serve config agrees with what ``pdeserve serve`` runs.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chart_support import CHART, NAMESPACE, chart_values, named, of_kind, render

CRDS = Path(__file__).parents[2].parent / "shared/k8s/crds"
RAYSERVICE_CRD = CRDS / "ray.io_rayservices.yaml"
# The chart's minimum (Chart.yaml kubeVersion) and the newest Kubernetes kubernetes-validate knows.
KUBE_VERSIONS = ["1.27", "1.37"]
CUSTOM_GROUPS = ("ray.io/", "monitoring.coreos.com/")


def ray_pod_templates(rayservice: dict) -> dict[str, dict]:
    """Pod templates of the RayService by group ("head" and the worker group names)."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"]["template"]}
    groups.update({g["groupName"]: g["template"] for g in cluster.get("workerGroupSpecs", [])})
    return groups


def serve_config_of(objects: list[dict]) -> dict:
    (rayservice,) = of_kind(objects, "RayService")
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


@pytest.mark.parametrize("case", ["default", "gpu-autoscaling"])
def test_helm_lint_has_no_warnings(case):
    import helm_python as helm

    report = helm.lint(CHART, chart_values(case), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # 2 warning, 3 error


def test_each_case_renders_its_objects(rendered):
    case, _, objects = rendered
    kinds = sorted(o["kind"] for o in objects)
    # every case: the Ray pods' NetworkPolicy and disruption budget, Ray's token Secret, two Services
    common = ["NetworkPolicy", "PodDisruptionBudget", "RayService", "Secret", "Service", "Service"]
    expected = {
        "default": [],
        "gpu-autoscaling": ["PodMonitor"],
        # retraining adds its job and the job's own NetworkPolicy
        "pvc-cronjob-servicemonitor": [
            "CronJob",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "ServiceAccount",
            "ServiceMonitor",
        ],
        "claim-job-gpu-retrain": ["Job", "NetworkPolicy"],
    }
    assert kinds == sorted(common + expected[case])
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "pdeserve"
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_core_objects_validate_against_kubernetes_schemas(rendered, kube_version):
    import kubernetes_validate

    _, _, objects = rendered
    core = [o for o in objects if not o["apiVersion"].startswith(CUSTOM_GROUPS)]
    # The RayService's pod templates are Kubernetes pod templates: validate them as such too.
    for rayservice in of_kind(objects, "RayService"):
        for group, template in ray_pod_templates(rayservice).items():
            core.append(
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group}, "template": template}
            )
    validated = [kubernetes_validate.validate(o, kube_version, strict=True) for o in core]
    assert validated == [kube_version] * len(core)


def _strict(schema):
    """The CRD schema with unknown fields refused, as the API server's strict field validation does
    (plain JSON Schema would let a misspelt field through, where Kubernetes drops or refuses it)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def rayservice_schema() -> dict:
    if not RAYSERVICE_CRD.is_file():
        pytest.skip(
            f"KubeRay's RayService CRD is not at {RAYSERVICE_CRD} (CI clones shared/ beside the repo)"
        )
    crd = yaml.safe_load(RAYSERVICE_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def test_rayservice_validates_against_the_kuberay_crd(rendered, rayservice_schema):
    import jsonschema

    _, _, objects = rendered
    (rayservice,) = of_kind(objects, "RayService")
    assert rayservice["apiVersion"] == "ray.io/v1"
    errors = list(jsonschema.Draft7Validator(rayservice_schema).iter_errors(rayservice))
    assert [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors] == []


def test_the_crd_check_refuses_a_misspelt_field(rayservice_schema):
    import jsonschema

    (rayservice,) = of_kind(render({}), "RayService")
    rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    errors = list(jsonschema.Draft7Validator(rayservice_schema).iter_errors(rayservice))
    assert len(errors) == 1 and "rayStartParam" in errors[0].message


def test_serve_config_validates_and_imports(rendered):
    """KubeRay hands serveConfigV2 to Ray's dashboard, which parses it with ServeDeploySchema and imports
    each servicer function and the application builder on the cluster."""
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    _, _, objects = rendered
    config = serve_config_of(objects)
    schema = ServeDeploySchema.model_validate(config)
    assert schema.grpc_options.port == 9000
    functions = config["grpc_options"]["grpc_servicer_functions"]
    assert len(functions) == 3
    # In a fresh interpreter, as on the cluster: this test process has tritonclient loaded (test_oip),
    # whose own copy of the inference.* protos shares protobuf's default pool with ours.
    check = "import importlib, sys\nfor path in sys.argv[1:]:\n" + (
        "    module, _, name = path.rpartition('.')\n"
        "    assert callable(getattr(importlib.import_module(module), name)), path\n"
    )
    imported = subprocess.run([sys.executable, "-c", check, *functions], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    (application,) = config["applications"]
    module, _, name = application["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), name)
    # The builder accepts every arg the chart passes (an unknown one raises) and returns the app.
    assert isinstance(builder(application["args"]), serve.Application)
    from pdeserve.serving.app import SolverService

    assert [d["name"] for d in application["deployments"]] == [SolverService.name]


def test_chart_copy_of_the_serve_config_is_current():
    from pdeserve.serving.serve_config import helm_template

    stale = "helm/pdeserve/files/serve-config.yaml differs from the module: run `make helm-config`"
    assert (CHART / "files" / "serve-config.yaml").read_text() == helm_template(), stale


def test_default_chart_serves_what_pdeserve_serve_runs(monkeypatch):
    """One source of truth: the chart's serveConfigV2 with default values is the module's config, whose
    options are those `pdeserve serve` starts with and whose proxies are those it starts."""
    from pdeserve import cli
    from pdeserve.serving import server
    from pdeserve.serving.options import ServingOptions
    from pdeserve.serving.serve_config import serve_config

    config = serve_config_of(render({}))
    assert config == serve_config()

    started = {}
    monkeypatch.setattr(server, "serve_forever", lambda repo, **kwargs: started.update(kwargs))
    # `pdeserve serve` sizes itself to the machine; the chart's default pod is a 2-CPU one.
    monkeypatch.setattr("pdeserve.cli.serve.machine_cpus", lambda: 2)
    assert cli.main(["serve", "--repo", "models"]) == 0
    args = dict(config["applications"][0]["args"])
    assert args.pop("repo") == "/models"
    assert ServingOptions(**args) == started["options"]
    assert (
        started["replicas"]
        == config["applications"][0]["deployments"][0]["autoscaling_config"]["max_replicas"]
    )
    assert server.serve_options(9000, 8000, host="0.0.0.0") == {
        k: config[k] for k in ("http_options", "grpc_options")
    }


def test_serve_config_cli_prints_the_config_of_the_same_flags(monkeypatch, capsys):
    from pdeserve import cli
    from pdeserve.serving import server

    flags = ["--max-batch-size", "8", "--max-queued-requests", "16", "--max-request-mb", "2"]
    flags += ["--batch-hold-fraction", "0.25"]
    flags += ["--auth-token-env", "PDESERVE_TEST_TOKEN"]
    monkeypatch.setenv("PDESERVE_TEST_TOKEN", "s3cret")
    assert cli.main(["serve-config", "--repo", "/data/models", "--max-replicas", "3", *flags]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    (application,) = config["applications"]
    args = application["args"]
    assert (args["repo"], args["max_batch_size"], args["max_queued_requests"]) == ("/data/models", 8, 16)
    assert args["max_request_bytes"] == 2 * 2**20 and args["batch_hold_fraction"] == 0.25
    assert args["auth_token_env"] == "PDESERVE_TEST_TOKEN" and "s3cret" not in str(config)
    assert application["deployments"][0]["autoscaling_config"]["max_replicas"] == 3

    started = {}
    monkeypatch.setattr(server, "serve_forever", lambda repo, **kwargs: started.update(kwargs))
    assert cli.main(["serve", "--repo", "models", *flags]) == 0
    assert {k: v for k, v in vars(started["options"]).items() if k != "auth_token"} == {
        k: v for k, v in args.items() if k != "repo"
    }


def test_serve_config_cli_refuses_bad_scaling(capsys):
    from pdeserve import cli

    assert cli.main(["serve-config", "--min-replicas", "4", "--max-replicas", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "min (4) <= max (2)" in err


def test_gpu_autoscaling_values():
    values = chart_values("gpu-autoscaling")
    objects = render(values)
    (rayservice,) = of_kind(objects, "RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    (workers,) = cluster["workerGroupSpecs"]
    assert (workers["groupName"], workers["minReplicas"], workers["maxReplicas"]) == ("gpu", 1, 8)
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"] == "registry.example.com/pdeserve:0.1.0-gpu"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in workers["template"][
        "spec"
    ]["tolerations"]
    deployment = serve_config_of(objects)["applications"][0]["deployments"][0]
    assert deployment["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1}
    assert deployment["autoscaling_config"] == values["serving"]["autoscalingConfig"]
    # Models come from the object store: synced by an init container, mounted read-only for serving.
    init = workers["template"]["spec"]["initContainers"][0]
    assert init["args"][-2:] == ["s3://pdeserve-models/production", "/models"]


def test_ray_pods_probes_security_and_model_mounts(rendered):
    _, values, objects = rendered
    (rayservice,) = of_kind(objects, "RayService")
    service = named(objects, "Service", "demo-pdeserve")
    metrics = named(objects, "Service", "demo-pdeserve-metrics")
    storage = values.get("modelStorage", {}).get("type", "image")
    for group, template in ray_pod_templates(rayservice).items():
        pod = template["spec"]
        (container,) = pod["containers"]
        assert container["readinessProbe"]["grpc"] == {"port": 9000}
        # Only the head always runs a Serve proxy; workers keep KubeRay's own liveness check.
        assert ("livenessProbe" in container) == (group == "head")
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        models = [m for m in container["volumeMounts"] if m["name"] == "models"]
        assert [m.get("readOnly") for m in models] == ([] if storage == "image" else [True])
        # The Services select every Ray pod by its labels, and target ports the containers name.
        names = {p["name"] for p in container["ports"]}
        for svc in (service, metrics):
            assert svc["spec"]["selector"].items() <= template["metadata"]["labels"].items()
            assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("serve-grpc", 9000)]
    assert [(p["name"], p["port"]) for p in metrics["spec"]["ports"]] == [("metrics", 8080)]


def test_ray_pods_carry_the_serve_environment_of_pdeserve_serve(rendered):
    from pdeserve.serving.server import SERVE_ENVIRONMENT

    _, _, objects = rendered
    (rayservice,) = of_kind(objects, "RayService")
    for template in ray_pod_templates(rayservice).values():
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert SERVE_ENVIRONMENT.items() <= env.items()


def test_auth_token_reaches_the_replicas_from_a_secret_and_never_the_serve_config(rendered):
    from pdeserve.serving.options import ServingOptions

    case, values, objects = rendered
    (rayservice,) = of_kind(objects, "RayService")
    args = dict(serve_config_of(objects)["applications"][0]["args"])
    args.pop("repo")
    options = ServingOptions(**args)
    secret = values.get("auth", {}).get("existingSecret", "")
    assert options.auth_token == "" and options.auth_token_env == ("PDESERVE_AUTH_TOKEN" if secret else "")
    assert (case == "pvc-cronjob-servicemonitor") == bool(secret)
    for template in ray_pod_templates(rayservice).values():
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        if secret:
            reference = env["PDESERVE_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert reference == {"name": "pdeserve-token", "key": "token"}
            # The replica reads exactly that variable; with it unset it refuses to start open.
            assert options.resolved_auth_token({"PDESERVE_AUTH_TOKEN": "t0ken"}) == "t0ken"
            with pytest.raises(ValueError, match="PDESERVE_AUTH_TOKEN is unset or empty"):
                options.resolved_auth_token({})
        else:
            assert "PDESERVE_AUTH_TOKEN" not in env and options.resolved_auth_token({}) == ""


def test_monitors_select_what_exports_metrics(rendered):
    _, _, objects = rendered
    monitors = of_kind(objects, "PodMonitor") + of_kind(objects, "ServiceMonitor")
    (rayservice,) = of_kind(objects, "RayService")
    service = named(objects, "Service", "demo-pdeserve-metrics")
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"].items()
        if monitor["kind"] == "PodMonitor":
            (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
            for template in ray_pod_templates(rayservice).values():
                assert selector <= template["metadata"]["labels"].items()
                assert endpoint["port"] in {p["name"] for p in template["spec"]["containers"][0]["ports"]}
        else:
            (endpoint,) = monitor["spec"]["endpoints"]
            assert selector <= service["metadata"]["labels"].items()
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


def test_retrain_command_parses_with_the_real_cli(rendered):
    from pdeserve.cli import build_parser

    case, values, objects = rendered
    jobs = of_kind(objects, "Job") + [c["spec"]["jobTemplate"] for c in of_kind(objects, "CronJob")]
    if not values.get("retrain", {}).get("enabled"):
        assert jobs == []
        return
    (job,) = jobs
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:2] == ["pdeserve", "retrain"]
    args = build_parser().parse_args(command[1:])
    assert (args.repo, args.model, args.n, args.epochs) == ("/models", "darcy-fno", 100, 10)
    # Retraining writes new versions: the same claim as the serving pods, mounted read-write.
    (models,) = [v for v in pod["volumes"] if v["name"] == "models"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {models["persistentVolumeClaim"]["claimName"]}
    assert not any(m.get("readOnly") for m in container["volumeMounts"])
    # A refused candidate (exit 3) fails the job at once instead of retrying.
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [3]
    if case == "claim-job-gpu-retrain":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert args.device == "cuda"
    else:
        assert args.max_regression == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"modelStorage": {"type": "nfs"}}, "/modelStorage/type"),
        ({"serving": {"replicaGpus": 1}}, "serving.replicaGpus > 0 needs gpuWorkers.enabled"),
        ({"retrain": {"enabled": True}}, "it needs modelStorage.type pvc or existingClaim"),
        ({"modelStorage": {"type": "existingClaim"}}, "modelStorage.existingClaim is required"),
        ({"cpuWorkers": {"enabled": False}}, "no Ray node can host a replica"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(values, message):
    import helm_python as helm

    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError), match=message):
        render(values)


def test_values_schema_is_the_one_helm_enforces():
    import helm_python as helm

    schema = json.loads((CHART / "values.schema.json").read_text())
    with helm.Chart.load(CHART) as chart:
        assert chart.schema == schema
        chart.validate_schema(yaml.safe_load((CHART / "values.yaml").read_text()))


def test_ingress_message_limit_follows_max_request_bytes():
    """A Serve config's ray_actor_options replace the code's, so the replicas' gRPC message limit
    (an environment variable, a string) is set at the application level from the chart's value."""
    config = serve_config_of(render({"serving": {"options": {"max_request_bytes": 123456789}}}))
    env = config["applications"][0]["runtime_env"]["env_vars"]
    assert env == {"RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": "123456789"}
