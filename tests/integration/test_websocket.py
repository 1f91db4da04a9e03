"""HTTP/1.1 Upgrade: websocket is tunnelled: python3-websockets on both ends."""

import asyncio
import os
import threading

import websockets

from harness import Proxy, Upstream, check, config, eq, main, request


class WsEcho:
    """A websockets echo server in its own event-loop thread."""

    def __init__(self):
        self.paths = []
        self.headers = []
        self.closed = 0
        self._ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ws-echo")
        self._thread.start()
        check(self._ready.wait(10), "websocket upstream did not start")
        self.addr_str = "127.0.0.1:%d" % self.port

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def handler(ws):
            self.paths.append(ws.path)
            self.headers.append({k.lower(): v for k, v in ws.request_headers.raw_items()})
            try:
                async for msg in ws:
                    await ws.send(msg)
            finally:
                self.closed += 1

        async def start():
            self.server = await websockets.serve(handler, "127.0.0.1", 0, max_size=None)
            self.port = self.server.sockets[0].getsockname()[1]
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def close(self):
        async def stop():
            self.server.close()
            await self.server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


def ws_config(ws_up, http_up):
    return config({"ws": [ws_up.addr_str], "http": http_up},
                  [{"name": "ws", "match": {"path_prefix": "/ws"},
                    "destinations": [{"upstream": "ws"}], "timeout": "30s"},
                   {"name": "http", "destinations": [{"upstream": "http"}]}])


MESSAGES = ["hello", "ünïcödé ✓", "", "x" * 70000, b"\x00\x01\x02\xff" * 10,
            os.urandom(1 << 20), b"", "last"]


async def echo_session(url, messages, headers=None):
    got = []
    async with websockets.connect(url, max_size=None, extra_headers=headers or {},
                                  open_timeout=10, close_timeout=5) as ws:
        for m in messages:
            await ws.send(m)
            got.append(await asyncio.wait_for(ws.recv(), 10))
        pong = await ws.ping(b"p")
        await asyncio.wait_for(pong, 10)
    return got


def test_websocket_echo_through_proxy():
    ws_up, http_up = WsEcho(), Upstream("http")
    try:
        with Proxy(ws_config(ws_up, http_up)) as p:
            host, port = p.addr()
            url = "ws://%s:%d/ws/chat?room=1" % (host, port)
            got = asyncio.run(echo_session(url, MESSAGES, {"X-Ws-Test": "abc"}))
            eq(len(got), len(MESSAGES), "messages echoed")
            for i, (a, b) in enumerate(zip(MESSAGES, got)):
                eq(type(b), type(a), "message %d type (text/binary)" % i)
                check(a == b, "message %d echoed differently (%d vs %d bytes)"
                      % (i, len(a), len(b)))
            eq(ws_up.paths, ["/ws/chat?room=1"], "path seen by the websocket upstream")
            eq(ws_up.headers[0].get("x-ws-test"), "abc", "custom header at the upstream")
            check(ws_up.headers[0].get("x-forwarded-for"), "no x-forwarded-for on the upgrade")
            # plain HTTP on the same listener still works
            eq(request(p.addr(), "GET", "/plain").status, 200, "HTTP request after the tunnel")
            recs = p.access_log(2)
            ws_recs = [r for r in recs if r.get("route") == "ws"]
            check(ws_recs and ws_recs[0].get("status") == 101,
                  "access log line for the websocket: %r" % recs)
    finally:
        ws_up.close()


def test_concurrent_websockets():
    ws_up, http_up = WsEcho(), Upstream("http")
    try:
        with Proxy(ws_config(ws_up, http_up)) as p:
            host, port = p.addr()

            async def many():
                sessions = [echo_session("ws://%s:%d/ws/%d" % (host, port, i),
                                         ["m%d-%d" % (i, j) for j in range(50)] +
                                         [os.urandom(3000)])
                            for i in range(8)]
                return await asyncio.gather(*sessions)

            results = asyncio.run(many())
            for i, got in enumerate(results):
                eq(got[:50], ["m%d-%d" % (i, j) for j in range(50)], "session %d texts" % i)
            eq(sorted(ws_up.paths), sorted("/ws/%d" % i for i in range(8)), "upstream paths")
            check(ws_up.closed == 8 or wait_closed(ws_up, 8),
                  "upstream saw %d of 8 websockets close" % ws_up.closed)
    finally:
        ws_up.close()


def test_websocket_survives_idle_pauses():
    ws_up, http_up = WsEcho(), Upstream("http")
    try:
        with Proxy(ws_config(ws_up, http_up)) as p:
            host, port = p.addr()

            async def session():
                async with websockets.connect("ws://%s:%d/ws/idle" % (host, port),
                                              max_size=None, ping_interval=None) as ws:
                    got = []
                    for i in range(3):
                        await ws.send("after-pause-%d" % i)
                        got.append(await asyncio.wait_for(ws.recv(), 10))
                        await asyncio.sleep(1.5)
                    return got

            eq(asyncio.run(session()), ["after-pause-%d" % i for i in range(3)],
               "messages around 1.5 s idle pauses")
    finally:
        ws_up.close()


def wait_closed(ws_up, n):
    import time
    deadline = time.monotonic() + 5
    while ws_up.closed < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return ws_up.closed >= n


if __name__ == "__main__":
    main(globals())
