#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz_reactor into fuzz/corpus/seed-*.

The layout is described at the top of fuzz_reactor.c: mode, SO_SNDBUF,
SO_RCVBUF, 8 reaction bytes, then operations. Re-running it rewrites the same
files; inputs found by `make fuzz` sit next to them under their hash names.
"""
import os

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


def main():
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(d, exist_ok=True)
    for name, data in sorted(variants().items()):
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
