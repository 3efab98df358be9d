#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz_reactor into fuzz/corpus/seed-*.

The layout is described at the top of fuzz_reactor.c: mode, SO_SNDBUF,
SO_RCVBUF, 8 reaction bytes, then operations. Re-running it rewrites the same
files; inputs found by `make fuzz` sit next to them under their hash names.

gen_seeds.py --tls DIR writes the seeds of fuzz_tls into DIR instead: TLS
flights captured from OpenSSL (Python's ssl module on memory BIOs, and
`openssl s_client` on a socket), each behind fuzz_tls.c's two bytes of mode,
and schedules of operations for its session kind.
They hold random values, so they are made at run time (fuzz/run.sh), never
committed. Needs the openssl command (for the certificates).
"""
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time

(PEER_WRITE, PEER_READ, PEER_SHUT_WR, PEER_CLOSE, PAUSE, RESUME, SEND, CLOSE,
 CLOSE_AFTER, CLOSE_WRITE, DETACH, TURN, TIMER, TICK, PERIODIC, CANCEL,
 TURNS) = range(17)

QUIET = [0] * 8  # receive_data / outbound_drained do nothing
ECHO = [128 + 1] * 8
MIXED = [0, 129, 0, 130, 0, 131, 0, 0]  # echo, pause, resume now and then


def send(data, rep=0):
    return [SEND, len(data), rep] + list(data)


def seed(mode, ops, react=QUIET, snd=0, rcv=0):
    return bytes([mode, snd, rcv] + list(react) + ops)


def variants():
    base = {
        "write-read": [PEER_WRITE, 0x05, TURN, TURNS, 3, PEER_READ, 0],
        "send-read": send(b"hello world") + [TURNS, 2, PEER_READ, 0],
        "big-peer-write": [PEER_WRITE, 0xff, TURNS, 7, PEER_WRITE, 0xfb, TURNS, 7],
        "big-send": send(b"0123456789abcdef" * 8, 209) + [TURNS, 7, PEER_READ, 0],
        "pause-resume": [PAUSE, PEER_WRITE, 0x42, TURNS, 2, RESUME, TURNS, 2],
        "peer-shut": [PEER_WRITE, 0x21, PEER_SHUT_WR, TURNS, 4],
        "peer-shut-paused": [PAUSE, PEER_WRITE, 0x21, PEER_SHUT_WR, TURNS, 2, RESUME,
                             TURNS, 3],
        "peer-close": [PEER_WRITE, 0x21, PEER_CLOSE, TURNS, 4],
        "peer-close-while-sending": send(b"x" * 200, 215) + [TURN, PEER_CLOSE, TURNS, 6],
        "close": send(b"bye") + [CLOSE, TURNS, 2],
        "close-after": send(b"z" * 250, 212) + [CLOSE_AFTER, TURNS, 7, PEER_READ, 0],
        "close-after-paused": [PAUSE] + send(b"paused") + [CLOSE_AFTER, TURNS, 2, RESUME,
                                                            TURNS, 3],
        "close-write": send(b"half") + [CLOSE_WRITE, TURNS, 2, PEER_WRITE, 0x09, TURNS, 2,
                                        PEER_SHUT_WR, TURNS, 2],
        "close-write-then-send": [CLOSE_WRITE] + send(b"refused") + [TURNS, 2],
        "detach": send(b"lost") + [DETACH, TURNS, 2],
        "detach-after-close-after": send(b"q" * 100, 210) + [CLOSE_AFTER, DETACH, TURNS, 2],
        "timer-close": [TIMER, 0, 3, TURNS, 3],
        "timer-1ms-detach": [TIMER, 2, 6, TURNS, 7, TURNS, 7],
        "tick-pause-resume": [TICK, 1, PEER_WRITE, 0x11, TURN, TICK, 2, TURNS, 3],
        "periodic-echo": [PERIODIC, 3, 0, PEER_WRITE, 0x05, TURNS, 7, TURNS, 7],
        "periodic-cancel-self": [PERIODIC, 7, 9, TURNS, 7, TURNS, 7],
        "cancel": [TIMER, 1, 3, CANCEL, TURNS, 5, CANCEL],
        "timers-race": [TIMER, 0, 3, TIMER, 0, 4, TIMER, 0, 6, TICK, 5, TURNS, 3],
        "close-in-tick-and-timer": send(b"abc") + [TICK, 4, TIMER, 0, 3, TURNS, 3],
        "peer-write-then-close-after": [PEER_WRITE, 0x83, CLOSE_AFTER, TURNS, 5],
        "paused-big": [PAUSE] + send(b"y" * 255, 209) + [PEER_WRITE, 0xff, TURNS, 3,
                                                        RESUME, TURNS, 7, PEER_READ, 0],
    }
    out = {}
    # each in one way of making the connection, in turn; the fuzzer crosses
    modes = [("attach", 0, QUIET, 0), ("server", 2, QUIET, 0), ("connect", 4, QUIET, 0),
             ("attach-poll-small-bufs", 1, MIXED, 4), ("server-poll-small-bufs", 3, MIXED, 4)]
    for i, (name, ops) in enumerate(base.items()):
        mname, m, react, buf = modes[i % len(modes)]
        out[f"{name}-{mname}"] = seed(m, ops, react, snd=buf, rcv=buf)
    out["echo-react-attach"] = seed(0, [PEER_WRITE, 0x33, TURNS, 5, PEER_READ, 0], ECHO)
    out["react-close-server"] = seed(2, [PEER_WRITE, 0x33, TURNS, 5], [132] * 8)
    out["react-detach-connect"] = seed(4, [PEER_WRITE, 0x33, TURNS, 5], [135] * 8)
    out["react-pause-poll"] = seed(5, [PEER_WRITE, 0x33, TURNS, 5, RESUME, TURNS, 3],
                                   [130] * 8)
    out["free-open-attach"] = seed(8, send(b"dropped") + [PEER_WRITE, 0x09, TURN])
    out["free-open-server"] = seed(8 | 2, [TIMER, 2, 3, TICK, 1] + send(b"d"))
    out["free-open-connect-poll"] = seed(8 | 4 | 1, [PAUSE] + send(b"d"))
    out["drained-close"] = seed(2, send(b"w" * 255, 211) + [TURNS, 7, PEER_READ, 0,
                                                          TURNS, 7], [0xff] * 8, snd=2,
                                rcv=2)
    return out


# ------------------------------------------------------------- fuzz_tls

# fuzz_tls.c's mode byte (kinds in bits 6-7) and knobs byte
T_POLL, T_SHUT_WR, T_QUEUE, T_CLOSE_AFTER = 1, 8, 16, 32
T_VERIFY, T_CLIENT, T_SESSION = 1 << 6, 2 << 6, 3 << 6
T_INSECURE, T_PAUSE, T_VERIFY_YES = 32, 64, 128
# the session kind's operations: (op, byte) pairs
S_APP, S_FLUSH, S_TURNS, S_PAUSE, S_RAW, S_NOTIFY, S_LOCAL, S_STOP = range(8)


def app(n):  # 1-128 bytes, or 512 * (b - 127)
    return [S_APP, n - 1] if n <= 128 else [S_APP, 127 + n // 512]


def session_seeds(seed):
    big = app(16384) + app(37376)
    seed("session-echo-notify", T_SESSION | T_SHUT_WR, 0,
         app(100) + [S_FLUSH, 0, S_TURNS, 1] + big + [S_FLUSH, 0, S_NOTIFY, 0])
    seed("session-truncated", T_SESSION | T_SHUT_WR, 0, big + [S_FLUSH, 0, S_TURNS, 3])
    seed("session-cut-records", T_SESSION | T_SHUT_WR | T_POLL, 0,
         app(37376) + [S_FLUSH, 1, S_TURNS, 0, S_FLUSH, 200, S_TURNS, 1, S_FLUSH, 3,
                       S_TURNS, 0] * 3 + [S_NOTIFY, 0])
    seed("session-pauses", T_SESSION | T_SHUT_WR, T_PAUSE,
         [S_PAUSE, 1] + big + [S_FLUSH, 0, S_TURNS, 2, S_PAUSE, 0, S_TURNS, 0, S_PAUSE, 1]
         + app(2000) + [S_FLUSH, 0, S_PAUSE, 0, S_NOTIFY, 0])
    seed("session-garbage", T_SESSION | T_SHUT_WR, 0,
         app(500) + [S_FLUSH, 0, S_RAW, 7] + list(b"\x17\x03\x03\x00\x03abc") + [S_TURNS, 2])
    seed("session-local", T_SESSION | T_SHUT_WR, 0,
         [S_LOCAL, 0x40, S_LOCAL, 0xfc] + app(300) + [S_FLUSH, 0, S_TURNS, 2, S_LOCAL, 2]
         + app(300) + [S_NOTIFY, 0])
    seed("session-local-close-after", T_SESSION, 0,
         [S_LOCAL, 0xfc, S_LOCAL, 1] + app(4000) + [S_FLUSH, 0, S_TURNS, 3])
    seed("session-queued-close-after", T_SESSION | T_QUEUE | T_CLOSE_AFTER | T_POLL, 0,
         [S_TURNS, 3])
    seed("session-stop-then-close", T_SESSION, 0,
         big + [S_STOP, 1, S_TURNS, 3, S_LOCAL, 0x80])


def t_pieces(n):
    return (n - 1) << 1


def make_cert(tmp, name):
    key, crt = os.path.join(tmp, name + ".key"), os.path.join(tmp, name + ".pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                    "-subj", "/CN=" + name, "-days", "30",
                    "-addext", "subjectAltName=DNS:" + name],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return crt, key


def client_ctx(max12=False, alpn=True, cert=None):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    if max12:
        c.maximum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        c.set_alpn_protocols(["h2", "http/1.1"])
    if cert:
        c.load_cert_chain(*cert)
    return c


def server_ctx(cert, max12=False, want_client_cert=None):
    s = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    s.load_cert_chain(*cert)
    s.set_alpn_protocols(["h2", "http/1.1"])
    if max12:
        s.maximum_version = ssl.TLSVersion.TLSv1_2
    if want_client_cert:
        s.verify_mode = ssl.CERT_REQUIRED
        s.load_verify_locations(want_client_cert)
    return s


def handshake(cctx, sctx, sni="localhost", session=None):
    """The flights of one handshake on memory BIOs: [(who, bytes)], and the
    client's session afterwards."""
    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    c = cctx.wrap_bio(cin, cout, server_side=False, server_hostname=sni, session=session)
    s = sctx.wrap_bio(sin, sout, server_side=True)
    flights, done = [], [False, False]
    for _ in range(10):
        for i, (end, out, into, who) in enumerate(((c, cout, sin, "c"), (s, sout, cin, "s"))):
            if not done[i]:
                try:
                    end.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            data = out.read()
            if data:
                flights.append((who, data))
                into.write(data)
        if all(done) and not cout.pending and not sout.pending:
            break
    # TLS 1.3 tickets arrive after the handshake: read them
    try:
        c.read(1)
    except (ssl.SSLWantReadError, ssl.SSLError):
        pass
    return flights, c.session


def sent_by(flights, who, count=None):
    parts = [d for w, d in flights if w == who]
    return b"".join(parts[:count] if count else parts)


def s_client_hello(extra):
    """The first bytes `openssl s_client` sends: its ClientHello."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    lst.settimeout(5)
    port = lst.getsockname()[1]
    p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + extra,
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    data = b""
    try:
        conn, _ = lst.accept()
        conn.settimeout(0.5)
        deadline = time.time() + 5
        while time.time() < deadline:
            if len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[3:5], "big"):
                break
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            data += chunk
        conn.close()
    finally:
        p.kill()
        p.wait()
        lst.close()
    return data


def sslv2_hello():
    """An SSLv2-format ClientHello (the old compatible one) asking for TLS 1.0."""
    specs = bytes.fromhex("c02b00c02f00009e0000330000ff00")[:15]  # 5 three-byte specs
    challenge = bytes(range(16))
    body = bytes([1, 3, 1]) + len(specs).to_bytes(2, "big") + b"\0\0" + \
        len(challenge).to_bytes(2, "big") + specs + challenge
    return bytes([0x80 | (len(body) >> 8), len(body) & 0xff]) + body


def tls_variants(tmp):
    srv = make_cert(tmp, "localhost")
    cli = make_cert(tmp, "client.test")
    out = {}

    def seed(name, mode, knobs, body):
        out[name] = bytes([mode, knobs]) + body

    c13, c12 = client_ctx(), client_ctx(max12=True)
    # a TLS 1.2 server: one that could do 1.3 marks its random (DOWNGRD),
    # which a 1.3 client such as libem's refuses before the Certificate
    s13, s12 = server_ctx(srv), server_ctx(srv, max12=True)
    f13, sess13 = handshake(c13, s13)
    f12, sess12 = handshake(c12, s12)
    hello13, hello12 = sent_by(f13, "c", 1), sent_by(f12, "c", 1)
    # libem as the server: what clients send
    seed("hello-tls13", 0, 0, hello13)
    seed("hello-tls12", T_POLL, 0, hello12)
    seed("hello-tls13-no-sni-no-alpn", 0, 0,
         sent_by(handshake(client_ctx(alpn=False), server_ctx(srv), sni=None)[0], "c", 1))
    seed("hello-tls13-4-pieces-shut", t_pieces(4) | T_SHUT_WR, 0x15, hello13)
    seed("hello-tls12-2-pieces-queued", t_pieces(2) | T_QUEUE | T_CLOSE_AFTER, 0x0a, hello12)
    seed("hello-tls13-paused", T_POLL, T_PAUSE, hello13)
    seed("flights-tls13", t_pieces(2), 0, sent_by(f13, "c"))
    seed("flights-tls12", t_pieces(3) | T_SHUT_WR, 7, sent_by(f12, "c"))
    fcc, _ = handshake(client_ctx(max12=True, cert=cli), server_ctx(srv, True, cli[0]))
    seed("client-cert-tls12", T_VERIFY, 0, sent_by(fcc, "c"))
    seed("client-cert-tls12-yes", T_VERIFY | T_POLL, T_VERIFY_YES, sent_by(fcc, "c"))
    fcc13, _ = handshake(client_ctx(cert=cli), server_ctx(srv, False, cli[0]))
    seed("client-cert-tls13", T_VERIFY | t_pieces(2), 0, sent_by(fcc13, "c"))
    seed("resume-tls13", 0, 0, sent_by(handshake(c13, s13, session=sess13)[0], "c", 1))
    seed("resume-tls12", 0, 0, sent_by(handshake(c12, s12, session=sess12)[0], "c", 1))
    seed("sslv2-hello", 0, 0, sslv2_hello())
    seed("http-request", 0, 0, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    seed("empty", T_SHUT_WR, 0, b"")
    for name, extra in (("s_client-hello", ["-servername", "localhost"]),
                        ("s_client-hello-tls12", ["-tls1_2", "-servername", "localhost"]),
                        ("s_client-hello-alpn", ["-alpn", "h2,http/1.1", "-noservername"])):
        data = s_client_hello(extra)
        if data:
            seed(name, 0, 0, data)
    # libem as the client: what servers send (a TLS 1.2 ServerHello and
    # Certificate are plaintext: the certificate reaches ssl_verify_peer)
    fl12, fl13 = sent_by(f12, "s", 1), sent_by(f13, "s", 1)
    seed("server-flight-tls12", T_CLIENT, 0, fl12)
    seed("server-flight-tls12-insecure", T_CLIENT, T_INSECURE, fl12)
    seed("server-flight-tls12-yes", T_CLIENT | T_POLL, T_VERIFY_YES, fl12)
    seed("server-flight-tls12-3-pieces", T_CLIENT | t_pieces(3) | T_SHUT_WR, 0x13, fl12)
    seed("server-flight-tls13", T_CLIENT, 0, fl13)
    seed("server-flight-tls12-queued", T_CLIENT | T_QUEUE | T_CLOSE_AFTER, 0, fl12)
    session_seeds(lambda name, mode, knobs, ops: seed(name, mode, knobs, bytes(ops)))
    return out


def write_tls_seeds(d):
    os.makedirs(d, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in sorted(tls_variants(tmp).items()):
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(data)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--tls":
        write_tls_seeds(sys.argv[2])
        return
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(d, exist_ok=True)
    for name, data in sorted(variants().items()):
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
