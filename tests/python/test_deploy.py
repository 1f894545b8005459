"""The Kubernetes manifests (deploy/k8s) as `kubectl kustomize` renders them: valid
against Kubernetes' own schemas (kubernetes-validate, offline, strict: unknown fields
are errors), and saying what the processors need — one StatefulSet per bounded context
with its own volume, a headless Service whose pod names the query API advertises,
probes on the health endpoints, the seed's resource bounds, a disruption budget, an HPA
no wider than the partition count, and only settings the binary knows."""

import pathlib
import re
import shutil
import subprocess

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
