#!/usr/bin/env python3
"""Hostile HTTP/1.1 input, side by side: torii, nginx and HAProxy (Python standard library only).

Each proxy runs on a free 127.0.0.1 port with a minimal generated config in a temp dir, in
front of its own in-process raw origin. The origin records every byte it receives and
answers each path with scripted raw bytes (like RawOrigin in tests/hostile.rs). The request
cases of tests/hostile.rs are sent byte for byte to each proxy; for each the script records
what the client got and what reached the origin (how many requests, a smuggled second one,
the hostile bytes forwarded as they came, override headers). The upstream cases make the
origin lie about its framing or die mid-answer; each is requested twice to see whether the
answer was stored. The result is printed as a markdown table.

    scripts/hostile_peers.py [--torii target/debug/torii] [--nginx PATH|none]
                             [--haproxy PATH|none] [--keep]

Upstream timeouts are 1 s for all three (torii connect/response_timeout, nginx
proxy_*_timeout, HAProxy timeout connect/server); torii's breaker is off (failures = 0) so
one case's failures don't eject the origin for the next; nginx passes `Host $host`. A client read ends at close, after 3 s,
or 0.7 s after a complete answer with the connection still open ("kept open"). The three
proxies run in parallel, the cases for each one in sequence. A proxy that is not installed
is skipped with a note; exit status 1 only when a proxy fails to start. Every process the
script starts is stopped by PID; nothing but 127.0.0.1 is contacted.
"""

import argparse
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

WAIT = 3.0  # a client read ends at close or after this long
IDLE_AFTER_ANSWER = 0.7  # ... or this long after a complete answer on an open connection
SETTLE = 0.15  # lets late origin traffic land before a case's snapshot is taken

# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------

# (name, raw request, marker): the marker is the hostile part of the request; if the origin
# receives it byte for byte, the cell says "forwarded as-is". The target of every case is
# /x, so an origin request for any other path is a smuggled one.
REFUSE = [
    ("CL and TE", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX", "cl+te"),
    ("TE and CL (other order)", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX", "cl+te"),
    ("two different CLs", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", b"Content-Length: 3\r\nContent-Length: 4"),
    ("CL list with different values", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd", b"Content-Length: 3, 4"),
    ("signed CL", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", b"Content-Length: +3"),
    ("negative CL", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", b"Content-Length: -1"),
    ("hex CL", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc", b"Content-Length: 0x3"),
    ("CL overflow", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", b"99999999999999999999999"),
    ("TE gzip, chunked", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", b"gzip, chunked"),
    ("TE chunked, gzip", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", b"chunked, gzip"),
    ("TE identity", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", b"Transfer-Encoding: identity"),
    ("TE xchunked", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", b"xchunked"),
    ("TE chunked twice in one field", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", b"chunked, chunked"),
    ("TE split over two fields", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"Transfer-Encoding: gzip"),
    ("TE with a vertical tab", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", b"\x0b"),
    ("TE in HTTP/1.0", b"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"Transfer-Encoding: chunked"),
    ("TE name with space before colon", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", b"Transfer-Encoding : chunked"),
    ("bad chunk size", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", b"zz\r\n"),
    ("chunk size overflow", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n0\r\n\r\n", b"ffffffffffffffffffff"),
    ("chunk data longer than its size", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", b"abcdef"),
    ("NUL in a header value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", b"a\x00b"),
    ("bare CR in a header value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", b"a\rb"),
    ("bare CR in the request line", b"GET /x\rHTTP/1.1\r\nHost: a\r\n\r\n", b"/x\r"),
    ("control byte in the target", b"GET /x\x01y HTTP/1.1\r\nHost: a\r\n\r\n", b"\x01"),
    ("obsolete line folding", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", b"\r\n  folded"),
    ("space before colon", b"GET /x HTTP/1.1\r\nHost : a\r\n\r\n", b"Host : a"),
    ("empty header name", b"GET /x HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", b"\r\n: v"),
    ("invalid method token", b"G(T /x HTTP/1.1\r\nHost: a\r\n\r\n", b"G(T"),
    ("target without a slash", b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", b"GET x "),
    ("unknown HTTP version", b"GET /x HTTP/1.2\r\nHost: a\r\n\r\n", b"HTTP/1.2"),
    ("missing Host", b"GET /x HTTP/1.1\r\n\r\n", None),
    ("two Hosts", b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"Host: a\r\nHost: b"),
    ("Host with a path", b"GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n", b"Host: a/b"),
    ("Host with userinfo", b"GET /x HTTP/1.1\r\nHost: u@a\r\n\r\n", b"Host: u@a"),
    ("absolute target disagrees with Host", b"GET http://evil/x HTTP/1.1\r\nHost: a\r\n\r\n", None),
]
# Cases whose cell also shows the Host the origin saw.
SHOW_HOST = {"missing Host", "two Hosts", "Host with a path", "Host with userinfo",
             "absolute target disagrees with Host"}

# Two classic smuggling probes (not in tests/hostile.rs): a whole second request hidden
# after the body under one reading of the framing. The raw origin, like the one in the tests,
# prefers Content-Length, so a proxy that forwards both headers would be smuggled through.
_HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
_CLTE_BODY = b"0\r\n\r\n" + _HIDDEN
_TECL_BODY = b"%x\r\n" % len(_HIDDEN) + _HIDDEN + b"\r\n0\r\n\r\n"
REFUSE += [
    ("CL.TE probe: a request after 0-chunk (extra)",
     b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(_CLTE_BODY) + _CLTE_BODY, "cl+te"),
    ("TE.CL probe: a request inside a chunk (extra)",
     b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + _TECL_BODY, "cl+te"),
]

# Requests a proxy may accept: the cell shows the framing the origin got.
ACCEPT = [
    ("equal repeated CLs (3, 3)", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", b"Content-Length: 3\r\nContent-Length: 3"),
    ("chunked with an extension and a trailer", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n", b"ext=1"),
    ("body that looks like a request", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nConnection: close\r\n\r\nGET /smuggled HTTP/1.1\r\nH: a\r\n\r\n", None),
]

OVERRIDE = (b"GET /x HTTP/1.1\r\nHost: shop\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n"
            b"X-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nX-Forwarded-Port: 1337\r\n"
            b"X-Forwarded-Scheme: nothttps\r\nX-Host: evil\r\nX-HTTP-Method-Override: DELETE\r\n"
            b"Connection: close\r\n\r\n")
URL_OVERRIDES = ["x-original-url", "x-rewrite-url", "x-forwarded-port", "x-forwarded-scheme",
                 "x-host", "x-http-method-override"]


class Script:
    """What the raw origin writes back for one path."""

    def __init__(self, response, close=False, delay=0.0, split=False, drip=0.0):
        self.response, self.close, self.delay, self.split, self.drip = response, close, delay, split, drip


DEFAULT = Script(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n\r\nok")
HUGE = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (512 * 1024) + b"\r\nContent-Length: 2\r\n\r\nok"

# (path, row label, script, lie(client head, lowercased) -> the lie reached the client)
UPSTREAM = [
    ("/bad-status", "bad status line (2x0)", Script(b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok"),
     lambda h: h.startswith(b"http/1.1 2x0")),
    ("/not-http", "not HTTP (SSH banner)", Script(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", close=True),
     lambda h: b"ssh-2.0" in h),
    ("/cl-and-te", "CL and TE", Script(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
     lambda h: b"\r\ncontent-length:" in h and b"\r\ntransfer-encoding:" in h),
    ("/two-cls", "two different CLs", Script(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"),
     lambda h: h.count(b"\r\ncontent-length:") > 1),
    ("/bad-cl", "bad CL (2x)", Script(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2x\r\n\r\nok"),
     lambda h: b"content-length: 2x" in h),
    ("/te-gzip", "TE chunked, gzip", Script(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\nok\r\n0\r\n\r\n", close=True),
     lambda h: b"gzip" in h),
    ("/null-in-header", "NUL in a header", Script(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok"),
     lambda h: b"\x00" in h),
    ("/folded", "folded header", Script(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"),
     lambda h: b"x-a: a\r\n b" in h),
    ("/closed-before-head", "closed before the head", Script(b"", close=True), lambda h: False),
    ("/half-head", "half a head, then closed", Script(b"HTTP/1.1 200 OK\r\nContent-Le", close=True), lambda h: False),
    ("/huge-header", "512 KiB header", Script(HUGE, close=True), lambda h: len(h) > 512 * 1024),
    ("/short", "body shorter than CL, then closed", Script(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\nonly part", close=True),
     lambda h: False),
    ("/mid-chunk", "closed mid-chunk", Script(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly", close=True),
     lambda h: False),
    ("/bad-chunk", "bad chunk size in the body", Script(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfine\r\nzz\r\n", close=True),
     lambda h: False),
    ("/drip", "dripping: half the answer after 3 s, the rest 3 s later", Script(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", delay=3.0, split=True),
     lambda h: False),
    ("/slow-drip", "slow head: one byte every 0.5 s (extra case)", Script(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", drip=0.5),
     lambda h: False),
]
UPSTREAM.insert(0, ("/fine", "control: a valid cacheable 200",
                     Script(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok"),
                     lambda h: False))
ONCE = {"/drip", "/slow-drip"}  # asked once: nothing to cache, and each costs the full wait

# --------------------------------------------------------------------------------------
# The raw origin
# --------------------------------------------------------------------------------------


def find_ci(hay, needle):
    return needle.lower() in hay.lower()


class RawOrigin:
    """Finds request boundaries (Content-Length, else chunked), records every request and
    every byte received, and answers each path with its script."""

    def __init__(self, scripts):
        self.scripts = scripts
        self.lock = threading.Lock()
        self.requests = []  # parsed requests, in order
        self.received = []  # every chunk of bytes received, in order
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.stopped = True
        self.sock.close()

    def snapshot(self):
        with self.lock:
            return len(self.requests), len(self.received), self.connections

    def since(self, snap):
        with self.lock:
            return self.requests[snap[0]:], b"".join(self.received[snap[1]:]), self.connections - snap[2]

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _more(self, conn, buf):
        try:
            data = conn.recv(65536)
        except OSError:
            return False
        if not data:
            return False
        with self.lock:
            self.received.append(data)
        buf.extend(data)
        return True

    def _read_request(self, conn, buf):
        while b"\r\n\r\n" not in buf:
            if not self._more(conn, buf):
                return None
        end = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:end]).lower()
        cl = None
        for line in head.split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                try:
                    cl = int(line.split(b":", 1)[1].strip())
                except ValueError:
                    pass
                break
        if cl is not None:
            while len(buf) < end + cl:
                if not self._more(conn, buf):
                    return None
            end += cl
        elif re.search(rb"\r\ntransfer-encoding:[^\r\n]*chunked", head):
            pos = end
            while True:
                while b"\r\n" not in buf[pos:]:
                    if not self._more(conn, buf):
                        return None
                eol = buf.index(b"\r\n", pos)
                try:
                    size = int(bytes(buf[pos:eol]).split(b";")[0].strip(), 16)
                except ValueError:  # unparseable: take what came as the body
                    end = len(buf)
                    break
                pos = eol + 2
                if size == 0:  # trailers, then an empty line
                    while True:
                        while b"\r\n" not in buf[pos:]:
                            if not self._more(conn, buf):
                                return None
                        eol = buf.index(b"\r\n", pos)
                        line_empty = eol == pos
                        pos = eol + 2
                        if line_empty:
                            break
                    end = pos
                    break
                while len(buf) < pos + size + 2:
                    if not self._more(conn, buf):
                        return None
                pos += size + 2
        request = bytes(buf[:end])
        del buf[:end]
        return request

    def _serve(self, conn):
        buf = bytearray()
        with conn:
            while True:
                request = self._read_request(conn, buf)
                if request is None:
                    return
                with self.lock:
                    self.requests.append(request)
                parts = request.split(b" ", 2)
                path = parts[1].split(b"?")[0].decode("latin-1") if len(parts) > 1 else ""
                script = self.scripts.get(path, DEFAULT)
                try:
                    if script.drip:
                        for i in range(len(script.response)):
                            time.sleep(script.drip)
                            conn.sendall(script.response[i:i + 1])
                    elif script.split:
                        half = len(script.response) // 2
                        time.sleep(script.delay)
                        conn.sendall(script.response[:half])
                        time.sleep(script.delay)
                        conn.sendall(script.response[half:])
                    else:
                        time.sleep(script.delay)
                        conn.sendall(script.response)
                except OSError:
                    return
                if script.close:
                    return


# --------------------------------------------------------------------------------------
# The client side
# --------------------------------------------------------------------------------------


def parse_answers(data, closed):
    """Splits what the client read into answers: dicts with status, head, body, complete."""
    answers = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            answers.append({"status": status_of(data[pos:]), "head": data[pos:], "body": b"", "complete": False})
            break
        head = data[pos:end + 4]
        pos = end + 4
        status = status_of(head)
        lower = head.lower()
        answer = {"status": status, "head": head, "body": b"", "complete": True}
        answers.append(answer)
        if status.startswith("1") and status != "1??":
            answers.pop()
            continue
        if status in ("204", "304"):
            continue
        te = re.findall(rb"\r\ntransfer-encoding:([^\r\n]*)", lower)
        cl = re.findall(rb"\r\ncontent-length:\s*(\d+)\s*\r", lower)
        if te and te[-1].strip().endswith(b"chunked"):
            start = pos
            ok = False
            while True:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    break
                try:
                    size = int(data[pos:eol].split(b";")[0].strip(), 16)
                except ValueError:
                    break
                pos = eol + 2
                if size == 0:
                    t = data.find(b"\r\n\r\n", pos - 2)
                    if t >= 0:
                        pos = t + 4
                        ok = True
                    break
                if len(data) < pos + size + 2:
                    pos = len(data)
                    break
                pos += size + 2
            answer["body"], answer["complete"] = data[start:pos], ok
            if not ok:
                break
        elif cl:
            n = int(cl[0])
            answer["body"] = data[pos:pos + n]
            answer["complete"] = len(answer["body"]) == n
            pos += n
            if not answer["complete"]:
                break
        else:  # delimited by the close
            answer["body"] = data[pos:]
            answer["complete"] = closed
            break
    return answers


def status_of(head):
    m = re.match(rb"HTTP/\d\.\d (\S{1,3})", head)
    if m:
        return m.group(1).decode("latin-1")
    return "non-HTTP"


def exchange(port, data, wait=WAIT):
    """Sends `data`, reads until close, `wait` seconds, or a complete answer followed by
    IDLE_AFTER_ANSWER of silence. Returns (bytes read, how it ended: closed/reset/open/timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.setblocking(False)
    out = bytearray()
    pending = memoryview(data)
    deadline = time.time() + wait
    last = time.time()
    how = "timeout"
    try:
        while True:
            now = time.time()
            if now >= deadline:
                break
            if out and now - last >= IDLE_AFTER_ANSWER:
                answers = parse_answers(bytes(out), False)
                if answers and all(a["complete"] for a in answers):
                    how = "open"
                    break
            wlist = [s] if len(pending) else []
            r, w, _ = select.select([s], wlist, [], min(0.05, deadline - now))
            if w:
                try:
                    n = s.send(pending[:65536])
                    pending = pending[n:]
                except BlockingIOError:
                    pass
                except OSError:
                    pending = memoryview(b"")  # the proxy stopped reading: keep reading its answer
            if r:
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    how = "reset"
                    break
                if not chunk:
                    how = "closed"
                    break
                out.extend(chunk)
                last = time.time()
    finally:
        s.close()
    return bytes(out), how


# --------------------------------------------------------------------------------------
# One proxy's run
# --------------------------------------------------------------------------------------


def origin_framing(req):
    lower = req.lower()
    cl = lower.count(b"\r\ncontent-length:")
    te = lower.count(b"\r\ntransfer-encoding:")
    parts = []
    if cl:
        parts.append("CL" if cl == 1 else f"{cl}×CL")
    if te:
        parts.append("chunked" if te == 1 else f"{te}×TE")
    return "+".join(parts) or "no framing header"


def host_of(req):
    m = re.findall(rb"\r\nhost:[ \t]*([^\r\n]*)", req.lower())
    if not m:
        return "none"
    return ", ".join(h.decode("latin-1") for h in m)


def client_cell(data, how, req=b""):
    """The status(es) the client got and whether the connection closed after them."""
    if not data:
        return {"closed": "closed", "reset": "reset", "timeout": "timeout", "open": "timeout"}[how]
    answers = parse_answers(data, how in ("closed", "reset"))
    statuses = ", ".join(a["status"] + ("" if a["complete"] else " cut") for a in answers)
    refused = any(not a["status"].startswith(("1", "2", "3")) for a in answers)
    if refused or len(answers) > 1:
        statuses += {"closed": " (closed)", "reset": " (reset)", "open": " (kept open)",
                     "timeout": " (then silent)"}[how]
    elif how in ("closed", "reset") and b"connection: close" not in req.lower():
        statuses += f" ({how})"  # a keep-alive request whose connection the proxy closed
    return statuses


def run_request_case(proxy, origin, name, req, marker, show_host=False):
    snap = origin.snapshot()
    data, how = exchange(proxy.port, req)
    time.sleep(SETTLE)
    seen, raw_in, _ = origin.since(snap)
    proxy.record(name, req, data, how, raw_in)
    cell = client_cell(data, how, req)
    notes = []
    if seen:
        framing = f" ({origin_framing(seen[0])})" if req.startswith(b"POST") and len(seen) == 1 else ""
        notes.append(f"origin saw {len(seen)}{framing}")
        answered = len(parse_answers(data, True)) if data else 0
        if len(seen) > max(answered, 1):  # the origin answered a request the client never got an answer to
            extra = [r.split(b"\r\n", 1)[0].decode("latin-1", "replace")[:30] for r in seen[1:]]
            notes.append("**SMUGGLED**: " + "; ".join(repr(e) for e in extra))
        elif len(seen) > 1:
            notes.append("the rest read as a 2nd client request")
        version = lambda r: r.split(b"\r\n", 1)[0].rsplit(b" ", 1)[-1]
        if version(seen[0]) != version(req) and version(seen[0]).startswith(b"HTTP/"):
            notes.append("as " + version(seen[0]).decode("latin-1"))
        if marker == "cl+te":
            if any(b"\r\ncontent-length:" in r.lower() and b"\r\ntransfer-encoding:" in r.lower() for r in seen):
                notes.append("CL+TE forwarded as-is")
        elif marker and find_ci(raw_in, marker) and not show_host:
            notes.append("forwarded as-is")
        elif name == "obsolete line folding" and b"folded" in raw_in:
            notes.append("unfolded to spaces")
        if show_host:
            notes.append("Host: " + host_of(seen[0]))
    elif raw_in:
        notes.append(f"origin got a cut-off request ({len(raw_in)} B)")
    return cell + (", " + ", ".join(notes) if notes else "")


def run_chunk_extension(proxy, origin):
    req = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;" + b"a" * (64 * 1024) + b"\r\nabc\r\n0\r\n\r\n"
    snap = origin.snapshot()
    data, how = exchange(proxy.port, req)
    time.sleep(SETTLE)
    seen, raw_in, _ = origin.since(snap)
    proxy.record("64 KiB chunk extension", req[:80] + b"...", data, how, raw_in[:400])
    cell = client_cell(data, how, req)
    if seen:
        body_through = any(r.endswith(b"abc") or (b"abc\r\n" in r and r.endswith(b"0\r\n\r\n")) for r in seen)
        ext_through = b"a" * 1024 in raw_in
        cell += f", origin saw {len(seen)}" + (", body arrived" if body_through else "") + (
            ", extension forwarded" if ext_through else "")
    return cell


def run_override(proxy, origin):
    snap = origin.snapshot()
    data, how = exchange(proxy.port, OVERRIDE)
    time.sleep(SETTLE)
    seen, raw_in, _ = origin.since(snap)
    proxy.record("override headers", OVERRIDE, data, how, raw_in)
    status = client_cell(data, how, OVERRIDE)
    if not seen:
        return [status] * 3
    lower = seen[0].lower()

    def value(h):
        m = re.findall(rb"\r\n" + h.encode() + rb":[ \t]*([^\r\n]*)", lower)
        return [v.decode("latin-1") for v in m]

    xfh = value("x-forwarded-host")
    if not xfh:
        xfh_cell = "dropped"
    elif xfh == ["evil.example"]:
        xfh_cell = "**evil.example passed**"
    else:
        xfh_cell = "set to " + ", ".join(xfh)
    xfp = value("x-forwarded-proto")
    if not xfp:
        xfp_cell = "dropped"
    elif xfp == ["https"]:
        xfp_cell = "**https passed**"
    else:
        xfp_cell = "set to " + ", ".join(xfp)
    passed = [h for h in URL_OVERRIDES if value(h)]
    if passed:
        over = f"**{len(passed)} of {len(URL_OVERRIDES)} passed**"
    else:
        over = f"all {len(URL_OVERRIDES)} dropped"
    return [f"{status}, {xfh_cell}", f"{status}, {xfp_cell}", f"{status}, {over}"]


def run_stray_crlf(proxy, origin):
    snap = origin.snapshot()
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)
    results = []
    try:
        s.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\r\n")
        for second in (b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", None):
            out = b""
            t0 = time.time()
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        results.append((out, "closed"))
                        break
                    out += chunk
                    a = parse_answers(out, False)
                    if a and a[0]["complete"]:
                        results.append((out, f"{time.time() - t0:.1f} s"))
                        break
            except socket.timeout:
                results.append((out, "timeout"))
            except OSError:
                results.append((out, "reset"))
            if second is None or results[-1][1] in ("closed", "timeout", "reset"):
                break
            try:
                s.sendall(second)
            except OSError:
                results.append((b"", "reset"))
                break
    finally:
        s.close()
    time.sleep(SETTLE)
    seen, _, _ = origin.since(snap)
    cells = []
    for out, how in results:
        if out:
            st = parse_answers(out, False)[0]["status"]
            cells.append(st if how.endswith(" s") and float(how[:-2]) < 1 else f"{st} after {how}")
        else:
            cells.append(how)
    if len(cells) == 1 and results[0][0]:
        cells.append("2nd not answered")
    return ", then ".join(cells) + f", origin saw {len(seen)}"


# How a complete 200 is described when the lie did not reach the client.
FIXED = {"/cl-and-te": "200, CL dropped", "/te-gzip": "200, gzip coding dropped",
         "/folded": "200, unfolded", "/null-in-header": "200, NUL removed"}


def run_upstream_case(proxy, origin, path, lie):
    snap = origin.snapshot()
    results = []
    for _ in range(1 if path in ONCE else 2):
        req = f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
        t0 = time.time()
        data, how = exchange(proxy.port, req)
        proxy.record(f"{path} ({time.time() - t0:.1f} s)", req, data[:600], how, b"")
        results.append(upstream_result(data, how, lie, FIXED.get(path, "200")))
    time.sleep(SETTLE)
    seen, _, _ = origin.since(snap)
    cell = results[0]
    if not seen:
        cell += " (origin not asked)"
    if len(results) == 2:
        if len(seen) == 1:
            cell += "; **2nd from cache**" + ("" if results[1] == results[0] else f" ({results[1]})")
        elif results[1] != results[0]:
            cell += f"; 2nd: {results[1]}"
    return cell


def upstream_result(data, how, lie, fixed):
    if not data:
        return {"closed": "closed, no answer", "reset": "reset, no answer", "timeout": "timeout",
                "open": "timeout"}[how]
    answers = parse_answers(data, how in ("closed", "reset"))
    a = answers[0]
    head = a["head"].lower()
    if lie(head):
        return f"{a['status']} → **forwarded as-is**" + ("" if a["complete"] else ", cut")
    if not a["complete"]:
        cl = re.findall(rb"\r\ncontent-length:\s*(\d+)", head)
        framing = f"CL {cl[0].decode()}" if cl else ("chunked" if b"\r\ntransfer-encoding:" in head else "close-delimited")
        return ("cut" if a["status"] == "200" else f"{a['status']} cut") + f" ({framing})"
    if a["status"] == "200":
        return fixed if b"ok" in a["body"] else "200, body lost"
    return a["status"]


# --------------------------------------------------------------------------------------
# The proxies
# --------------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    def __init__(self, name, tmp, origin):
        self.name, self.tmp, self.origin = name, tmp, origin
        self.port = free_port()
        self.proc = None
        self.log = os.path.join(tmp, f"{name}.log")
        self.transcript = []

    def record(self, case, sent, got, how, origin_got):
        self.transcript.append(f"== {case}\nsent:   {sent!r}\ngot:    {got!r} [{how}]\norigin: {origin_got!r}\n")

    def start(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, cwd=self.tmp)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    with open(self.log, "rb") as f:
                        tail = f.read()[-2000:].decode("utf-8", "replace")
                    raise RuntimeError(f"{self.name} did not start:\n{tail}")
                time.sleep(0.1)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_torii(binary, tmp, origin):
    p = Proxy("torii", tmp, origin)
    cfg = os.path.join(tmp, "torii.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
listen = ["127.0.0.1:{p.port}"]
admin = "off"
[log]
access = "off"
[upstreams.app]
servers = ["http://127.0.0.1:{origin.port}"]
retries = 0
breaker = {{ failures = 0 }}
connect_timeout = "1s"
response_timeout = "1s"
[[routes]]
upstream = "app"
""")
    p.start([binary, "run", "--config", cfg])
    return p


def start_nginx(binary, tmp, origin):
    p = Proxy("nginx", tmp, origin)
    d = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    cfg = os.path.join(d, "nginx.conf")
    user = "user root root;" if os.geteuid() == 0 else ""
    with open(cfg, "w") as f:
        f.write(f"""{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path       {d}/tmp/proxy;
    fastcgi_temp_path     {d}/tmp/fastcgi;
    uwsgi_temp_path       {d}/tmp/uwsgi;
    scgi_temp_path        {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{p.port};
        location / {{
            proxy_pass http://127.0.0.1:{origin.port};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_connect_timeout 1s;
            proxy_send_timeout 1s;
            proxy_read_timeout 1s;
        }}
    }}
}}
""")
    p.start([binary, "-p", d, "-e", os.path.join(d, "error.log"), "-c", cfg, "-g", "daemon off;"])
    return p


def start_haproxy(binary, tmp, origin):
    p = Proxy("haproxy", tmp, origin)
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 1s
    timeout http-request 5s
frontend fe
    bind 127.0.0.1:{p.port}
    default_backend be
backend be
    server origin 127.0.0.1:{origin.port}
""")
    p.start([binary, "-f", cfg, "-db"])
    return p


def version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def run_all(proxy):
    """Every case against one proxy; returns {row label: cell}."""
    origin = proxy.origin
    cells = {}
    for name, req, marker in REFUSE:
        cells[name] = run_request_case(proxy, origin, name, req, marker, name in SHOW_HOST)
    for name, req, marker in ACCEPT:
        cells[name] = run_request_case(proxy, origin, name, req, marker)
    cells["64 KiB chunk extension"] = run_chunk_extension(proxy, origin)
    xfh, xfp, over = run_override(proxy, origin)
    cells["X-Forwarded-Host: evil.example"] = xfh
    cells["X-Forwarded-Proto: https"] = xfp
    cells["URL/method overrides (X-Original-URL, X-Rewrite-URL, X-Forwarded-Port/-Scheme, X-Host, X-HTTP-Method-Override)"] = over
    cells["stray CRLF after a body, then a 2nd request"] = run_stray_crlf(proxy, origin)
    for path, label, _, lie in UPSTREAM:
        cells["up: " + label] = run_upstream_case(proxy, origin, path, lie)
    return cells


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--torii", default="target/debug/torii")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx",
                    help='nginx binary ("none" skips the column)')
    ap.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy",
                    help='haproxy binary ("none" skips the column)')
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp dir (configs, logs, a transcript of every exchange)")
    args = ap.parse_args()

    scripts = {path: script for path, _, script, _ in UPSTREAM}
    tmp = tempfile.mkdtemp(prefix="torii-hostile-")
    os.chmod(tmp, 0o755)
    def found(path):
        return os.path.abspath(path) if path and path != "none" and os.path.exists(path) else None

    peers = [("torii", found(args.torii), start_torii), ("nginx", found(args.nginx), start_nginx),
             ("HAProxy", found(args.haproxy), start_haproxy)]
    notes, proxies, origins, failed = [], [], [], False
    try:
        for name, binary, start in peers:
            if binary is None and name == "torii":
                print(f"no torii binary at {args.torii} (cargo build first)", file=sys.stderr)
                return 1
            if binary is None:
                notes.append(f"{name}: not installed, column skipped")
                continue
            origin = RawOrigin(scripts)
            origins.append(origin)
            try:
                proxy = start(binary, tmp, origin)
            except RuntimeError as e:
                print(e, file=sys.stderr)
                failed = True
                break
            proxy.label = name
            proxies.append(proxy)
            ver = {"torii": [binary, "--version"], "nginx": [binary, "-v"], "HAProxy": [binary, "-v"]}[name]
            notes.append(f"{name}: {version(ver)}")
        if failed:
            return 1
        results = {}
        threads = []
        for p in proxies:
            t = threading.Thread(target=lambda p=p: results.__setitem__(p.label, run_all(p)), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
    finally:
        for p in proxies:
            p.stop()
        for o in origins:
            o.stop()
        if args.keep:
            for p in proxies:
                with open(os.path.join(tmp, f"{p.name}.transcript"), "w") as f:
                    f.write("\n".join(p.transcript))
            print(f"(temp dir kept, with a transcript per proxy: {tmp})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    cols = [p.label for p in proxies]
    rows = list(results[cols[0]].keys()) if cols else []
    print("| case | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    section = None
    for row in rows:
        sec = "upstream response" if row.startswith("up: ") else "request"
        if sec != section:
            section = sec
            print(f"| **{sec} cases** |" + " |" * len(cols))
        label = row[4:] if row.startswith("up: ") else row
        print(f"| {label} | " + " | ".join(results[c].get(row, "").replace("|", "\\|") for c in cols) + " |")
    print()
    for n in notes:
        print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
