#!/usr/bin/python3
"""deploy.migration: the walk-through of docs/deploy.md, for real, on loopback.

strangler runs with config/01-mirror.yaml from a directory laid out the way the kubelet
lays out a ConfigMap volume (strangler.yaml -> ..data/strangler.yaml, ..data -> a
timestamped directory). Each step is rolled out the way a ConfigMap update reaches a pod:
a new timestamped directory and an atomic swap of the ..data symlink. No restart: the
process, its PID and its listening port stay; strangler_config_generation goes up and
GET /config shows the new weights. A second process (another replica) makes the same
sticky decisions. An invalid update is rejected and the previous step keeps serving.
Then config/edge-tls.yaml with a certificate made by openssl: HTTPS in, and
X-Forwarded-Proto as an ALB sends it."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from deploylib import ROOT, Strangler, Upstream, clean_env, get, insecure_tls_context, main

CONFIG = ROOT / "config"


class ConfigMapDir:
    """A directory like a ConfigMap volume, updated with the kubelet's symlink swap."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.version = 0

    def publish(self, text):
        self.version += 1
        ts = self.path / ("..2024_11_24_10_00_%02d.%d" % (self.version, os.getpid()))
        ts.mkdir()
        (ts / "strangler.yaml").write_text(text)
        tmp = self.path / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(ts.name, tmp)
        os.replace(tmp, self.path / "..data")            # the atomic swap
        link = self.path / "strangler.yaml"
        if not link.is_symlink():
            os.symlink("..data/strangler.yaml", link)
        for old in self.path.glob("..2024_*"):           # the kubelet removes the old one
            if old != ts:
                shutil.rmtree(old)

    @property
    def file(self):
        return self.path / "strangler.yaml"


def served_by(px, path, user=None, method="GET"):
    headers = {"x-user-id": user} if user else {}
    status, _, body = get(px.addr("public"), path, headers, method=method)
    assert status == 200, (status, body)
    return body["service"]


def test_mirror_canary_cutover_through_configmap_updates():
    with Upstream("monolith") as mono, Upstream("bar-service") as bar, \
            tempfile.TemporaryDirectory() as tmp:
        cm = ConfigMapDir(Path(tmp) / "etc-strangler")
        cm.publish((CONFIG / "01-mirror.yaml").read_text())
        env = clean_env(LISTEN_ADDR="127.0.0.1:0", ADMIN_ADDR="127.0.0.1:0", WORKERS="2",
                        MONOLITH_ADDR=mono.addr, BAR_ADDR=bar.addr)
        users = ["user-%d" % i for i in range(200)]
        with Strangler(cm.file, env, Path(tmp)) as px:
            pid, port = px.proc.pid, px.addr("public")
            assert px.generation() == 1

            # Step 1: clients only ever see the monolith; bar-service gets shadows of GETs.
            for u in users[:20]:
                assert served_by(px, "/bar/items?id=1", u) == "monolith"
            assert served_by(px, "/bar/items", "u", method="POST") == "monolith"
            assert served_by(px, "/orders") == "monolith"
            assert bar.wait_for(20), "bar-service got %d shadows" % len(bar.requests)
            shadows = bar.taken()
            assert all(s["method"] == "GET" for s in shadows), shadows  # methods: [GET, HEAD]
            assert all(s["path"] == "/items?id=1" for s in shadows), shadows  # rewritten
            assert all(s["host"].split(":")[0].endswith("-shadow") for s in shadows), shadows
            primaries = {r["x-request-id"] for r in mono.taken()}
            assert {s["x-request-id"] for s in shadows} <= primaries
            sent = px.metric("strangler_mirror_requests_total")
            assert any('route="bar"' in k and 'outcome="sent"' in k and v >= 20
                       for k, v in sent.items()), sent

            # Step 2: the canary, rolled out as a ConfigMap update.
            cm.publish((CONFIG / "02-canary-20.yaml").read_text())
            px.wait_generation(2)
            cfg = px.config_json()
            bar_cfg = [r for r in cfg["routes"] if r["name"] == "bar"][0]
            assert [(d["upstream"], d["weight"]) for d in bar_cfg["destinations"]] == \
                [("monolith", 80), ("bar-service", 20)], bar_cfg
            choice = {u: served_by(px, "/bar/x", u) for u in users}
            share = sum(1 for s in choice.values() if s == "bar-service") / len(users)
            assert 0.08 <= share <= 0.35, "bar-service got %.0f %% of 200 users" % (share * 100)
            for u in users[:40]:                                   # sticky
                assert served_by(px, "/bar/y", u) == choice[u], u
            bar.taken()

            # Another replica with the same file makes the same decision for every user.
            env2 = dict(env)
            with Strangler(cm.file, env2, Path(tmp) / "replica2") as px2:
                for u in users[:60]:
                    assert served_by(px2, "/bar/z", u) == choice[u], u

            # An invalid update is rejected: step 2 keeps serving.
            cm.publish((CONFIG / "03-cutover.yaml").read_text().replace("weight: 100",
                                                                        "weight: lots"))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                fails = px.metric("strangler_config_reloads_total").get('{result="failure"}', 0)
                if fails >= 1:
                    break
                time.sleep(0.05)
            assert fails >= 1, "the invalid update was not seen:\n" + px.stderr_text()
            assert px.generation() == 2
            for u in users[:20]:
                assert served_by(px, "/bar/x", u) == choice[u], u

            # Step 3: the cutover.
            cm.publish((CONFIG / "03-cutover.yaml").read_text())
            px.wait_generation(3)
            for u in users[:40]:
                assert served_by(px, "/bar/x", u) == "bar-service", u
            assert served_by(px, "/bar/x") == "bar-service"
            assert served_by(px, "/orders") == "monolith"

            # Never restarted: same process, same port.
            assert px.proc.poll() is None and px.proc.pid == pid and px.addr("public") == port


def test_edge_tls_behind_an_alb():
    with Upstream("monolith") as mono, Upstream("bar-service") as bar, \
            tempfile.TemporaryDirectory() as tmp:
        crt, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=strangler-edge.test", "-keyout", str(key), "-out", str(crt)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = clean_env(LISTEN_ADDR="127.0.0.1:0", TLS_LISTEN_ADDR="127.0.0.1:0",
                        ADMIN_ADDR="127.0.0.1:0", TLS_CERT=str(crt), TLS_KEY=str(key),
                        WORKERS="1", MONOLITH_ADDR=mono.addr, BAR_ADDR=bar.addr)
        with Strangler(CONFIG / "edge-tls.yaml", env, Path(tmp)) as px:
            tls = insecure_tls_context()
            # ALB -> target over HTTPS: the ALB's X-Forwarded-Proto is kept.
            status, _, body = get(px.addr("secure"), "/", {"X-Forwarded-Proto": "https",
                                                           "X-Forwarded-For": "203.0.113.7"},
                                  tls=tls)
            assert status == 200 and body["service"] == "monolith", body
            assert body["xfp"] == "https", body
            assert body["xff"].startswith("203.0.113.7, "), body
            # ALB -> target over HTTP: still https, as the ALB said.
            status, _, body = get(px.addr("public"), "/", {"X-Forwarded-Proto": "https"})
            assert status == 200 and body["xfp"] == "https", body
            # Straight to the listeners, no header: strangler says what it saw.
            _, _, body = get(px.addr("public"), "/")
            assert body["xfp"] == "http", body
            _, _, body = get(px.addr("secure"), "/", tls=tls)
            assert body["xfp"] == "https", body
            # The canary of the example, sticky over both listeners.
            for u in ("alice", "bob", "carol", "dave"):
                a = get(px.addr("public"), "/bar/q", {"x-user-id": u})[2]["service"]
                b = get(px.addr("secure"), "/bar/q", {"x-user-id": u}, tls=tls)[2]["service"]
                assert a == b, (u, a, b)
            status, _, _ = get(px.admin, "/ready")
            assert status == 200


if __name__ == "__main__":
    main(globals())
