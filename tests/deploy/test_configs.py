#!/usr/bin/python3
"""deploy.configs: every shipped configuration passes `strangler --check`, and the three
migration files of /bar (config/01-mirror.yaml, 02-canary-20.yaml, 03-cutover.yaml) are the
three steps they claim to be, differing only in the "bar" route."""

import copy
import re
import tempfile
from pathlib import Path

import yaml

from deploylib import ROOT, check, clean_env, expand, main

CONFIG = ROOT / "config"
STEPS = ["01-mirror.yaml", "02-canary-20.yaml", "03-cutover.yaml"]


def load(name):
    return yaml.safe_load((CONFIG / name).read_text())


def bar_route(cfg):
    routes = [r for r in cfg["routes"] if r["name"] == "bar"]
    assert len(routes) == 1, cfg["routes"]
    return routes[0]


def weights(route):
    return [(d["upstream"], int(d.get("weight", 1))) for d in route["destinations"]]


def test_every_config_file_passes_check():
    files = sorted(CONFIG.glob("*.yaml"))
    names = {f.name for f in files}
    for want in STEPS + ["demo.yaml", "edge-tls.yaml"]:
        assert want in names, "config/%s is missing (have %s)" % (want, sorted(names))
    for f in files:
        code, out = check(f)  # environment without LISTEN_ADDR etc.: the defaults are checked
        assert code == 0, "%s does not pass --check:\n%s" % (f, out)
        assert "configuration valid" in out, out


def test_image_default_config_needs_only_monolith_addr():
    f = ROOT / "docker" / "strangler.yaml"
    code, out = check(f, clean_env(MONOLITH_ADDR="10.0.0.5:3000"))
    assert code == 0, out
    code, out = check(f)
    assert code == 1, out
    assert re.search(r"strangler\.yaml:\d+:\d+: environment variable \"MONOLITH_ADDR\" is not set",
                     out), out


def test_migration_files_differ_only_in_the_bar_route():
    docs = [load(n) for n in STEPS]
    base = copy.deepcopy(docs[0])
    for name, doc in zip(STEPS[1:], docs[1:]):
        assert set(doc) == set(base), name
        for key in base:
            if key != "routes":
                assert doc[key] == base[key], "%s: %s differs from %s" % (name, key, STEPS[0])
        assert [r["name"] for r in doc["routes"]] == [r["name"] for r in base["routes"]], name
        for r0, r in zip(base["routes"], doc["routes"]):
            if r["name"] != "bar":
                assert r == r0, "%s: route %s differs" % (name, r["name"])
        assert bar_route(doc)["match"] == bar_route(base)["match"], name
        assert bar_route(doc).get("rewrite") == bar_route(base).get("rewrite"), name
    # The bar route comes before the catch-all, which stays on the monolith.
    for doc in docs:
        names = [r["name"] for r in doc["routes"]]
        assert names.index("bar") < names.index("default")
        assert weights(doc["routes"][-1]) == [("monolith", 1)]


def test_step1_mirrors_bar_and_answers_from_the_monolith():
    bar = bar_route(load(STEPS[0]))
    assert weights(bar) == [("monolith", 1)], bar
    assert "sticky" not in bar
    mirrors = bar["mirror"]
    assert [m["upstream"] for m in mirrors] == ["bar-service"], mirrors
    assert float(mirrors[0].get("percent", 100)) > 0
    assert mirrors[0].get("host_suffix", "-shadow") != "", "shadows must be recognisable"


def test_step2_is_a_sticky_20_percent_canary():
    bar = bar_route(load(STEPS[1]))
    w = weights(bar)
    assert w == [("monolith", 80), ("bar-service", 20)], w  # the growing service last
    assert bar["sticky"] == {"header": "x-user-id"}, bar
    assert "mirror" not in bar


def test_step3_cuts_over_and_keeps_the_monolith_at_weight_0():
    bar = bar_route(load(STEPS[2]))
    assert weights(bar) == [("monolith", 0), ("bar-service", 100)], bar
    assert bar["sticky"] == {"header": "x-user-id"}, bar


def test_addresses_follow_the_environment():
    """The same files serve a laptop, CI and the Helm chart's containers."""
    env = {"LISTEN_ADDR": "0.0.0.0:18080", "ADMIN_ADDR": "0.0.0.0:19901",
           "MONOLITH_ADDR": "127.0.0.1:13000", "BAR_ADDR": "bar:8080"}
    for name in STEPS:
        cfg = load(name)
        assert expand(cfg["listeners"][0]["address"], env) == "0.0.0.0:18080", name
        assert expand(cfg["admin"]["address"], env) == "0.0.0.0:19901", name
        assert expand(cfg["admin"]["address"], {}) == "127.0.0.1:9901", \
            "%s: the admin port must default to loopback outside Kubernetes" % name
        eps = {u: [expand(e, env) for e in v["endpoints"]] for u, v in cfg["upstreams"].items()}
        assert eps == {"monolith": ["127.0.0.1:13000"], "bar-service": ["bar:8080"]}, eps
        code, out = check(CONFIG / name, clean_env(**env))
        assert code == 0, out


def test_edge_tls_example():
    cfg = load("edge-tls.yaml")
    by_name = {l["name"]: l for l in cfg["listeners"]}
    assert set(by_name) == {"public", "secure"}, by_name
    tls = by_name["secure"]["tls"]
    assert expand(tls["certificate"], {}) == "/etc/strangler-tls/tls.crt", tls
    assert expand(tls["private_key"], {}) == "/etc/strangler-tls/tls.key", tls
    assert "h2" not in tls.get("alpn", []), "HTTP/2 over TLS is not served yet"
    assert expand(cfg["admin"]["address"], {}) == "0.0.0.0:9901", "probes need the pod IP"
    idle = cfg["limits"]["idle_timeout"]
    assert re.fullmatch(r"\d+s", idle) and int(idle[:-1]) > 60, \
        "idle_timeout %s must exceed the ALB's 60 s idle timeout" % idle


def test_drain_fits_the_default_grace_period():
    for f in sorted(CONFIG.glob("*.yaml")) + [ROOT / "docker" / "strangler.yaml"]:
        drain = expand(yaml.safe_load(f.read_text())["shutdown"]["drain_timeout"], {})
        assert re.fullmatch(r"\d+s", drain), (f, drain)
        assert int(drain[:-1]) < 30, \
            "%s: drain_timeout %s is not below Kubernetes' default grace period (30 s)" % (f, drain)


def test_a_typo_in_a_copy_is_caught():
    """What CI does for the files above catches a broken edit, with its position."""
    text = (CONFIG / STEPS[1]).read_text().replace("weight: 20", "wieght: 20")
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "02-canary-20.yaml"
        f.write_text(text)
        code, out = check(f)
    assert code == 1, out
    assert re.search(r"02-canary-20\.yaml:\d+:\d+: unknown key \"wieght\"", out), out


def test_docs_name_existing_files():
    text = (ROOT / "docs" / "deploy.md").read_text()
    named = set(re.findall(r"\b((?:config|docker|helm/strangler(?:/ci)?)/[\w.-]+\.(?:yaml|md))",
                           text))
    assert named, "docs/deploy.md names no config file"
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, "docs/deploy.md names files that do not exist: %s" % missing


if __name__ == "__main__":
    main(globals())
