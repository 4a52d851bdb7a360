"""Transport defaults of `pdeserve serve` (where it listens, what it makes of the machine, secrets kept
out of reprs) and TLS on the client side, against a real gRPC server with a certificate made here."""

from __future__ import annotations

import datetime
import ipaddress
from concurrent import futures

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from pdeserve import cli
from pdeserve.serving import server
from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.options import ServingOptions, listen_host
from pdeserve.serving.serve_config import cgroup_cpu_quota, local_scaling, machine_cpus


def test_the_token_stays_out_of_the_options_repr():
    options = ServingOptions(auth_token="s3cret-token")
    assert "s3cret-token" not in repr(options) and "s3cret-token" not in str(options)
    assert options.resolved_auth_token() == "s3cret-token"


@pytest.mark.parametrize(
    ("options", "host", "expected"),
    [
        (ServingOptions(), None, "127.0.0.1"),
        (ServingOptions(auth_token_env="PDESERVE_AUTH_TOKEN"), None, "0.0.0.0"),
        (ServingOptions(auth_token="t"), None, "0.0.0.0"),
        (ServingOptions(), "0.0.0.0", "0.0.0.0"),
        (ServingOptions(auth_token_env="PDESERVE_AUTH_TOKEN"), "10.0.0.5", "10.0.0.5"),
    ],
)
def test_listen_host(options, host, expected):
    assert listen_host(options, host) == expected


@pytest.mark.parametrize(
    ("cpus", "replicas", "replica_cpus", "expected"),
    [
        (1, None, None, (1, 1)),
        (2, None, None, (2, 1)),  # this machine: one replica per core
        (3, None, None, (3, 1)),
        (16, None, None, (16, 1)),
        (8, None, 2, (4, 2)),
        (2, 2, None, (2, 1)),
        (2, 4, None, (4, 0.5)),  # more replicas than CPUs: each its share, so all of them start
        (8, None, 1, (8, 1)),
        (8, None, 4, (2, 4)),
        (8, 3, 1.5, (3, 1.5)),
    ],
)
def test_local_scaling_fills_the_machine(cpus, replicas, replica_cpus, expected):
    scaling = local_scaling(cpus, replicas, replica_cpus)
    assert (scaling.max_replicas, scaling.num_cpus) == expected
    assert scaling.min_replicas == scaling.max_replicas


def test_machine_cpus_counts_affinity_and_quota(tmp_path):
    assert machine_cpus(affinity=8, quota=2.5) == 2
    assert machine_cpus(affinity=2, quota=16.0) == 2
    assert machine_cpus(affinity=4, quota=0.5) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1) == 3.0
    assert cgroup_cpu_quota(tmp_path / "absent") is None


def started_with(monkeypatch, *flags: str) -> dict:
    started = {}
    monkeypatch.setattr(server, "serve_forever", lambda repo, **kwargs: started.update(kwargs))
    assert cli.main(["serve", "--repo", "models", *flags]) == 0
    return started


def test_serve_listens_on_loopback_unless_a_token_or_host_says_otherwise(monkeypatch):
    assert started_with(monkeypatch)["host"] == "127.0.0.1"
    assert started_with(monkeypatch, "--host", "0.0.0.0")["host"] == "0.0.0.0"
    monkeypatch.setenv("PDESERVE_TEST_TOKEN", "s3cret")
    with_token = started_with(monkeypatch, "--auth-token-env", "PDESERVE_TEST_TOKEN")
    assert with_token["host"] == "0.0.0.0" and "s3cret" not in repr(with_token)


def test_serve_sizes_its_replicas_from_the_machine(monkeypatch):
    monkeypatch.setattr("pdeserve.cli.serve.machine_cpus", lambda: 8)
    started = started_with(monkeypatch)
    assert (started["replicas"], started["replica_cpus"]) == (8, 1)
    started = started_with(monkeypatch, "--replicas", "4")
    assert (started["replicas"], started["replica_cpus"]) == (4, 2)
    started = started_with(monkeypatch, "--replicas", "8")
    assert (started["replicas"], started["replica_cpus"]) == (8, 1)
    started = started_with(monkeypatch, "--replica-cpus", "8")
    assert (started["replicas"], started["replica_cpus"]) == (1, 8)


@pytest.fixture(scope="module")
def self_signed() -> tuple[bytes, bytes]:
    """``(certificate PEM, key PEM)`` for localhost and 127.0.0.1, made here."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def tls_target(self_signed) -> str:
    """A real gRPC server on a TLS port (the standard health service), as a TLS-terminating front."""
    certificate, key = self_signed
    tls_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), tls_server)
    port = tls_server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, certificate)]))
    tls_server.start()
    yield f"127.0.0.1:{port}"
    tls_server.stop(grace=None)


def test_client_talks_tls_to_a_front_with_its_certificate(tls_target, self_signed):
    certificate, _ = self_signed
    with SolverClient(tls_target, timeout=10, retries=0, root_certificates=certificate) as client:
        assert client.health() == "SERVING"


@pytest.mark.parametrize("tls", [False, True])  # plaintext to a TLS port; TLS without the certificate
def test_client_without_tls_or_without_the_certificate_cannot_connect(tls_target, tls):
    with (
        SolverClient(tls_target, timeout=10, retries=0, tls=tls) as client,
        pytest.raises(SolverError) as err,
    ):
        client.health()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_solve_command_reaches_a_tls_front_with_a_root_certificate(tls_target, self_signed, tmp_path, capsys):
    """The front serves health only: with the certificate the call gets through TLS and is answered
    UNIMPLEMENTED; without it, the connection itself fails."""
    pem = tmp_path / "front.pem"
    pem.write_bytes(self_signed[0])
    np.save(tmp_path / "a.npy", np.zeros((8, 8), np.float32))
    command = ["solve", "--target", tls_target, "--model", "m", "--input", str(tmp_path / "a.npy")]
    command += ["--timeout", "10"]
    assert cli.main([*command, "--tls-root-cert", str(pem)]) == 1
    assert "UNIMPLEMENTED" in capsys.readouterr().err
    assert cli.main(command) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
