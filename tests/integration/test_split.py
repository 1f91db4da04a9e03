"""Weighted split and sticky routing through the real binary."""

import collections

from harness import Client, Proxy, Upstream, build_request, check, config, eq, main


def split_config(ups, weights, sticky=None):
    r = {"name": "split",
         "destinations": [{"upstream": n, "weight": w} for n, w in weights]}
    if sticky:
        r["sticky"] = sticky
    return config(ups, [r])


def servers_for(addr, reqs, batch=1):
    """Sends the requests ([(headers), ...]) on one keep-alive connection (pipelined in batches
    when batch > 1); returns the upstream name that answered each one."""
    out = []
    with Client(addr) as c:
        for i in range(0, len(reqs), batch):
            part = reqs[i:i + batch]
            c.send(b"".join(build_request("GET", "/s/%d" % (i + j), h)
                            for j, h in enumerate(part)))
            for j in range(len(part)):
                r = c.read_response()
                eq(r.status, 200, "request %d status" % (i + j))
                e = r.json()
                eq(e["path"], "/s/%d" % (i + j), "response order")
                out.append(e["server"])
    return out


def test_weighted_80_20_and_weight_0():
    ups = {"old": Upstream("old"), "new": Upstream("new"), "zero": Upstream("zero")}
    cfg = split_config(ups, [("old", 80), ("new", 20), ("zero", 0)])
    with Proxy(cfg) as p:
        got = []
        for _ in range(4):          # several connections: both workers take part
            got += servers_for(p.addr(), [()] * 500)
        n = collections.Counter(got)
        share = n["old"] / len(got)
        check(0.72 <= share <= 0.88, "old got %.1f%% of %d requests (want ~80%%): %r"
              % (100 * share, len(got), dict(n)))
        eq(n["zero"], 0, "requests sent to a weight-0 destination")
        eq(ups["zero"].accepted, 0, "connections opened to a weight-0 destination")


def sticky_map(addr, keys, header="x-user-id", rounds=2):
    """key -> upstream; asserts every key lands on one upstream in each of `rounds` passes,
    each pass on a new connection."""
    seen = {}
    for rnd in range(rounds):
        order = keys if rnd % 2 == 0 else list(reversed(keys))
        got = servers_for(addr, [((header, k),) for k in order])
        for k, s in zip(order, got):
            if k in seen:
                eq(s, seen[k], "sticky key %r moved (round %d)" % (k, rnd))
            seen[k] = s
    return seen


def test_sticky_header_same_key_same_upstream_across_processes():
    ups = {"old": Upstream("old"), "new": Upstream("new")}
    cfg = split_config(ups, [("old", 50), ("new", 50)], {"header": "x-user-id"})
    keys = ["user-%d" % i for i in range(300)]
    with Proxy(cfg) as p1:
        m1 = sticky_map(p1.addr(), keys)
    with Proxy(cfg) as p2:
        m2 = sticky_map(p2.addr(), keys)
    moved = [k for k in keys if m1[k] != m2[k]]
    eq(moved, [], "keys mapped differently by a second process")
    share = sum(1 for k in keys if m1[k] == "new") / len(keys)
    check(0.35 <= share <= 0.65, "sticky 50/50 gave new %.0f%% of keys" % (100 * share))


def test_sticky_cookie():
    ups = {"old": Upstream("old"), "new": Upstream("new")}
    cfg = split_config(ups, [("old", 50), ("new", 50)], {"cookie": "session"})
    keys = ["s%05d" % i for i in range(100)]
    with Proxy(cfg) as p:
        plain = servers_for(p.addr(), [(("Cookie", "session=" + k),) for k in keys])
        mixed = servers_for(p.addr(), [(("Cookie", "a=1; session=%s; b=%s" % (k, k[::-1])),)
                                        for k in keys])
        for k, a, b in zip(keys, plain, mixed):
            eq(b, a, "cookie key %r: other cookies changed the destination" % k)
        n = collections.Counter(plain)
        check(n["old"] >= 20 and n["new"] >= 20, "cookie keys not spread: %r" % dict(n))


def test_sticky_without_key_falls_back_to_random():
    ups = {"old": Upstream("old"), "new": Upstream("new")}
    cfg = split_config(ups, [("old", 50), ("new", 50)], {"header": "x-user-id"})
    with Proxy(cfg) as p:
        got = servers_for(p.addr(), [()] * 200)
        n = collections.Counter(got)
        check(n["old"] >= 40 and n["new"] >= 40,
              "requests without the sticky key: %r (want both, roughly even)" % dict(n))


def test_sticky_raising_weight_only_moves_keys_to_new():
    ups = {"old": Upstream("old"), "new": Upstream("new")}
    keys = ["k-%d" % i for i in range(1000)]
    maps = {}
    for w in (10, 50, 90):
        with Proxy(split_config(ups, [("old", 100 - w), ("new", w)],
                                {"header": "x-user-id"})) as p:
            maps[w] = sticky_map(p.addr(), keys, rounds=1)
    for w, (lo, hi) in ((10, (0.05, 0.15)), (50, (0.44, 0.56)), (90, (0.85, 0.95))):
        share = sum(1 for k in keys if maps[w][k] == "new") / len(keys)
        check(lo <= share <= hi, "weight new=%d: %.1f%% of keys on new" % (w, 100 * share))
    for a, b in ((10, 50), (50, 90), (10, 90)):
        back = [k for k in keys if maps[a][k] == "new" and maps[b][k] != "new"]
        eq(back, [], "keys on new at weight %d but back on old at %d" % (a, b))


def test_sticky_never_picks_weight_0():
    ups = {"old": Upstream("old"), "zero": Upstream("zero"), "new": Upstream("new")}
    cfg = split_config(ups, [("old", 50), ("zero", 0), ("new", 50)], {"header": "x-user-id"})
    with Proxy(cfg) as p:
        m = sticky_map(p.addr(), ["z-%d" % i for i in range(300)], rounds=1)
        n = collections.Counter(m.values())
        eq(n["zero"], 0, "sticky keys on a weight-0 destination")
        check(n["old"] >= 100 and n["new"] >= 100, "sticky keys spread %r" % dict(n))


def test_endpoint_balance_modes():
    e1, e2 = Upstream("e1"), Upstream("e2")
    for balance in ("round_robin", "random", "least_request"):
        cfg = config({"up": {"endpoints": [e1, e2], "balance": balance}},
                     [{"name": "r", "destinations": [{"upstream": "up"}]}])
        with Proxy(cfg) as p:
            got = servers_for(p.addr(), [()] * 200)
            n = collections.Counter(got)
            check(n["e1"] >= 60 and n["e2"] >= 60, "%s over two endpoints: %r"
                  % (balance, dict(n)))
            if balance == "round_robin":
                check(40 <= n["e1"] <= 160, "round_robin: %r" % dict(n))


if __name__ == "__main__":
    main(globals())
