#!/usr/bin/python3
"""A tiny HTTP/1.1 upstream for the strangler demo (standard library only).

Every request, whatever its method or path, is answered with a JSON body
naming this service, so the demo can show where strangler sent it:

    {"service": "bar-service", "method": "GET", "path": "/", "x-request-id": "...",
     "x-user-id": null, "body_bytes": 0}

Usage: demo-upstream.py --name NAME --port PORT [--host 127.0.0.1] [--port-file PATH]
With --port 0 the kernel picks a free port; --port-file then receives it
(written atomically once the socket listens).
"""

import argparse
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo-upstream"
    service = "demo"
    verbose = False

    def _read_body(self):
        """Reads and counts the request body (Content-Length or chunked)."""
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            total = 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunked body")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return total
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        raise ConnectionError("eof in chunk")
                    remaining -= len(chunk)
                total += size
                self.rfile.readline(3)  # CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                raise ConnectionError("eof in body")
            remaining -= len(chunk)
        return length

    def _answer(self):
        try:
            body_bytes = self._read_body()
        except (ValueError, ConnectionError):
            self.send_error(400, "bad request body")
            self.close_connection = True
            return
        payload = {
            "service": self.service,
            "method": self.command,
            "path": self.path,
            "x-request-id": self.headers.get("x-request-id"),
            "x-user-id": self.headers.get("x-user-id"),
            "body_bytes": body_bytes,
        }
        data = (json.dumps(payload) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("[%s] %s\n" % (self.service, fmt % args))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="service name put in every answer")
    ap.add_argument("--port", type=int, required=True, help="TCP port; 0 = any free port")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--verbose", action="store_true", help="log each request on stderr")
    args = ap.parse_args()

    Handler.service = args.name
    Handler.verbose = args.verbose
    server = Server((args.host, args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
