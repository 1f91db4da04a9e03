#!/usr/bin/python3
"""Client for the idle scenario: opens COUNT connections to HOST:PORT, makes one HTTP/1.1
request on each (so each becomes an idle keep-alive connection, as after real traffic),
BATCH connections at a time so that the proxy needs only a few upstream connections,
prints "READY ok=N failed=M" and holds every connection open until stdin closes
or SIGTERM. Usage: idle.py HOST PORT COUNT [BATCH]"""
import signal
import socket
import sys

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
batch = int(sys.argv[4]) if len(sys.argv) > 4 else 50
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
REQ = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def read_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(4096)
        if not got:
            return False
        data += got
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(body) < length:
        got = sock.recv(4096)
        if not got:
            return False
        body += got
    return head.startswith(b"HTTP/1.1 200")


held, failed = [], 0
for start in range(0, count, batch):
    group = []
    for _ in range(min(batch, count - start)):
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(REQ)
            group.append(s)
        except OSError:
            failed += 1
    for s in group:
        try:
            if read_response(s):
                held.append(s)
            else:
                failed += 1
                s.close()
        except OSError:
            failed += 1
            s.close()
print("READY ok=%d failed=%d" % (len(held), failed), flush=True)
sys.stdin.read()
