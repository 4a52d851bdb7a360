"""helm/pdeserve closes Ray's control plane: NetworkPolicy, Ray token authentication, no service account
tokens, bounded emptyDirs, a disruption budget, a control-plane-only liveness probe, metrics on their own
Service and a deadline on retraining. Each test asserts the exact fields of the rendered manifests."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest
from chart_support import named, of_kind, render

FULLNAME = "demo-pdeserve"
RAY_PODS = {
    "app.kubernetes.io/name": "pdeserve",
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/component": "ray",
}
RAY_AUTH_SECRET = f"{FULLNAME}-ray-auth"
RETRAIN = {"modelStorage": {"type": "pvc"}, "retrain": {"enabled": True}}
OBJECT_STORE = {"modelStorage": {"type": "objectStore", "objectStore": {"uri": "s3://models/prod"}}}


def ray_pod_specs(objects: list[dict]) -> dict[str, dict]:
    """Pod specs of the RayService by group ("head" and the worker group names)."""
    (rayservice,) = of_kind(objects, "RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    specs = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    specs.update({g["groupName"]: g["template"]["spec"] for g in cluster.get("workerGroupSpecs", [])})
    return specs


def retrain_pod_specs(objects: list[dict]) -> list[dict]:
    jobs = of_kind(objects, "Job") + [c["spec"]["jobTemplate"] for c in of_kind(objects, "CronJob")]
    return [job["spec"]["template"]["spec"] for job in jobs]


def env_of(pod: dict) -> dict[str, dict]:
    return {e["name"]: e for e in pod["containers"][0]["env"]}


# --- NetworkPolicy ---------------------------------------------------------------------------------


def test_network_policy_keeps_ray_ports_among_the_releases_ray_pods():
    policy = named(render({}), "NetworkPolicy", FULLNAME)
    assert policy["spec"] == {
        "podSelector": {"matchLabels": RAY_PODS},
        "policyTypes": ["Ingress"],
        "ingress": [
            # every port (GCS 6379, dashboard 8265, Ray client 10001, raylets, ...) among the Ray pods only
            {"from": [{"podSelector": {"matchLabels": RAY_PODS}}]},
            # gRPC from any pod of the namespace by default
            {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 9000}]},
            {
                "from": [
                    {
                        "namespaceSelector": {},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                    }
                ],
                "ports": [{"protocol": "TCP", "port": 8080}],
            },
            {
                "from": [
                    {
                        "namespaceSelector": {},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
                    }
                ],
                "ports": [{"protocol": "TCP", "port": 8265}, {"protocol": "TCP", "port": 8000}],
            },
        ],
    }
    # no rule opens GCS or the Ray client port to anything but the Ray pods
    opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
    assert opened.isdisjoint({6379, 10001})


def test_network_policy_peers_come_from_values():
    clients = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
        {"podSelector": {"matchLabels": {"role": "simulation"}}},
    ]
    scrapers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    values = {
        "networkPolicy": {"grpcClients": clients, "metricsScrapers": scrapers},
        "service": {"grpcPort": 9443, "metricsPort": 9090},
    }
    ingress = named(render(values), "NetworkPolicy", FULLNAME)["spec"]["ingress"]
    assert ingress[1] == {"from": clients, "ports": [{"protocol": "TCP", "port": 9443}]}
    assert ingress[2] == {"from": scrapers, "ports": [{"protocol": "TCP", "port": 9090}]}


def test_network_policy_can_be_left_to_the_cluster():
    assert of_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == []


def test_retraining_pods_accept_no_ingress():
    objects = render(RETRAIN)
    policy = named(objects, "NetworkPolicy", f"{FULLNAME}-retrain")
    selector = {**RAY_PODS, "app.kubernetes.io/component": "retrain"}
    assert policy["spec"] == {
        "podSelector": {"matchLabels": selector},
        "policyTypes": ["Ingress"],
        "ingress": [],
    }
    (cronjob,) = of_kind(objects, "CronJob")
    labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels.items() >= selector.items()


# --- Ray token authentication ------------------------------------------------------------------------


def test_ray_token_auth_on_every_ray_container_from_a_chart_secret():
    objects = render({})
    secret = named(objects, "Secret", RAY_AUTH_SECRET)
    token = base64.b64decode(secret["data"]["auth_token"]).decode()
    assert len(token) == 48 and token.isalnum()
    for pod in ray_pod_specs(objects).values():
        env = env_of(pod)
        assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}
        assert env["RAY_AUTH_TOKEN"] == {
            "name": "RAY_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": RAY_AUTH_SECRET, "key": "auth_token"}},
        }
    # KubeRay reads the same Secret to call the dashboard (and injects it into the autoscaler)
    (rayservice,) = of_kind(objects, "RayService")
    auth = rayservice["spec"]["rayClusterConfig"]["authOptions"]
    assert auth == {"mode": "token", "secretName": RAY_AUTH_SECRET}


def test_ray_token_auth_from_an_existing_secret():
    objects = render({"rayAuth": {"existingSecret": "ray-token"}})
    assert of_kind(objects, "Secret") == []
    for pod in ray_pod_specs(objects).values():
        reference = env_of(pod)["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert reference == {"name": "ray-token", "key": "auth_token"}
    (rayservice,) = of_kind(objects, "RayService")
    assert rayservice["spec"]["rayClusterConfig"]["authOptions"]["secretName"] == "ray-token"


def test_ray_token_auth_off():
    objects = render({"rayAuth": {"enabled": False}})
    assert of_kind(objects, "Secret") == []
    (rayservice,) = of_kind(objects, "RayService")
    assert "authOptions" not in rayservice["spec"]["rayClusterConfig"]
    for pod in ray_pod_specs(objects).values():
        assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}.isdisjoint(env_of(pod))


def test_installed_ray_enforces_the_token_the_pods_get():
    """The environment a Ray container gets (the Secret resolved as the kubelet does) makes the installed
    Ray run in token mode with the Secret's token."""
    objects = render({})
    secrets = {s["metadata"]["name"]: s["data"] for s in of_kind(objects, "Secret")}
    token = base64.b64decode(secrets[RAY_AUTH_SECRET]["auth_token"]).decode()

    def resolve(entry: dict) -> str:
        if "value" in entry:
            return entry["value"]
        reference = entry["valueFrom"]["secretKeyRef"]
        return base64.b64decode(secrets[reference["name"]][reference["key"]]).decode()

    (head,) = ray_pod_specs(objects)["head"]["containers"]
    resolved = {e["name"]: resolve(e) for e in head["env"] if e["name"].startswith("RAY_")}
    check = (
        "from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, get_authentication_mode\n"
        "assert get_authentication_mode() == AuthenticationMode.TOKEN, get_authentication_mode()\n"
        "print(AuthenticationTokenLoader.instance().get_raw_token())\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    done = subprocess.run(
        [sys.executable, "-c", check], env={**base, **resolved}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == token


# --- Pods: service account tokens, emptyDir limits, probes ---------------------------------------------


@pytest.mark.parametrize(
    ("values", "head_token"),
    [({}, False), ({"autoscaler": {"enabled": True}}, True), (RETRAIN, False)],
    ids=["default", "autoscaler", "retrain"],
)
def test_only_the_autoscalers_head_mounts_a_service_account_token(values, head_token):
    objects = render(values)
    automount = {group: pod["automountServiceAccountToken"] for group, pod in ray_pod_specs(objects).items()}
    # KubeRay's autoscaler runs in the head pod and calls the Kubernetes API; nothing else does
    assert automount == {"head": head_token, "cpu": False}
    assert [pod["automountServiceAccountToken"] for pod in retrain_pod_specs(objects)] == (
        [False] if "retrain" in values else []
    )


@pytest.mark.parametrize("values", [{}, OBJECT_STORE, RETRAIN], ids=["default", "objectStore", "retrain"])
def test_every_empty_dir_has_a_size_limit(values):
    objects = render(values)
    pods = list(ray_pod_specs(objects).values()) + retrain_pod_specs(objects)
    assert len(pods) == (3 if values is RETRAIN else 2)
    limits = {
        (v["name"], v["emptyDir"]["sizeLimit"]) for pod in pods for v in pod["volumes"] if "emptyDir" in v
    }
    # Ray's /tmp (session files, logs), the caches, and Ray's object store in /dev/shm
    expected = {
        ("writable-0", "4Gi"),
        ("writable-1", "1Gi"),
        ("writable-2", "64Mi"),
        ("shared-memory", "2Gi"),
    }
    if values is OBJECT_STORE:
        # the synced models, and the init container's scratch space
        expected |= {("models", "10Gi"), ("sync-tmp", "256Mi")}
    assert limits == expected
    writable = [m for m in pods[0]["containers"][0]["volumeMounts"] if m["name"].startswith("writable-")]
    assert [m["mountPath"] for m in writable] == ["/tmp", "/home/ray/.cache", "/home/ray/.config"]


def test_head_liveness_checks_the_control_plane_and_readiness_the_data_plane():
    pods = ray_pod_specs(render({}))
    (head,) = pods["head"]["containers"]
    assert head["livenessProbe"] == {
        "httpGet": {"path": "/api/gcs_healthz", "port": "dashboard"},
        "initialDelaySeconds": 120,
        "periodSeconds": 20,
        "timeoutSeconds": 5,
        "failureThreshold": 6,
    }
    assert {"name": "dashboard", "containerPort": 8265} in head["ports"]
    for pod in pods.values():
        (container,) = pod["containers"]
        assert container["readinessProbe"] == {
            "grpc": {"port": 9000},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        }


def test_ray_dashboard_serves_gcs_health_without_the_token():
    """The liveness path is one the installed Ray's dashboard answers under token authentication."""
    import inspect

    from ray.dashboard import http_server_head

    source = inspect.getsource(http_server_head)
    public = source[source.index("public_exact_paths") : source.index("public_path_prefixes")]
    assert '"/api/gcs_healthz"' in public


# --- PodDisruptionBudget, metrics Service, retraining deadline ------------------------------------


def test_disruption_budget_of_the_ray_pods():
    budget = named(render({}), "PodDisruptionBudget", FULLNAME)
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"] == {
        "minAvailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": {"matchLabels": RAY_PODS},
    }
    assert (
        named(render({"podDisruptionBudget": {"minAvailable": 3}}), "PodDisruptionBudget", FULLNAME)["spec"][
            "minAvailable"
        ]
        == 3
    )
    assert of_kind(render({"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget") == []


def test_metrics_have_their_own_service_listing_unready_pods():
    objects = render({"monitoring": {"enabled": True, "kind": "ServiceMonitor"}})
    metrics = named(objects, "Service", f"{FULLNAME}-metrics")
    assert metrics["spec"] == {
        "type": "ClusterIP",
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": RAY_PODS,
        "ports": [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}],
    }
    grpc = named(objects, "Service", FULLNAME)
    assert [p["name"] for p in grpc["spec"]["ports"]] == ["serve-grpc"]
    (monitor,) = of_kind(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    assert selector <= metrics["metadata"]["labels"].items()
    assert not selector <= grpc["metadata"]["labels"].items()


@pytest.mark.parametrize(
    ("retrain", "deadline"), [({}, 21600), ({"activeDeadlineSeconds": 900}, 900)], ids=["default", "set"]
)
@pytest.mark.parametrize("schedule", ["0 3 * * 0", ""], ids=["cronjob", "job"])
def test_retraining_has_a_deadline(retrain, deadline, schedule):
    values = {**RETRAIN, "retrain": {"enabled": True, "schedule": schedule, **retrain}}
    objects = render(values)
    jobs = of_kind(objects, "Job") + [c["spec"]["jobTemplate"] for c in of_kind(objects, "CronJob")]
    assert [job["spec"]["activeDeadlineSeconds"] for job in jobs] == [deadline]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"writableDirs": [{"path": "/tmp"}]}, "sizeLimit"),
        ({"networkPolicy": {"grpcClients": [{}]}}, "/networkPolicy/grpcClients/0"),
        ({"podDisruptionBudget": {"minAvailable": "50%"}}, "/podDisruptionBudget/minAvailable"),
        ({"retrain": {"activeDeadlineSeconds": 0}}, "/retrain/activeDeadlineSeconds"),
    ],
)
def test_bad_hardening_values_are_refused(values, message):
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError, match=message):
        render(values)
