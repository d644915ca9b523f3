"""
A hostile but allowed ring peer, run as its own process by
test_ring_peers.py:

    ring_hostile_peer.py SOCKET SECONDS [MAX_CONNS]

For SECONDS it keeps up to MAX_CONNS connections to the backend (more
are tried each round, to take every client index it can), and on each
writes random bytes over everything it mapped (queue indexes, entries,
slot headers, data), pushes random and valid-looking sq entries, rings
the doorbell, writes its completion doorbell and sends garbage control
messages.  Connections the backend drops are replaced.  At the end it
prints one JSON line: connections made, refused, dropped, rounds.
"""

import json
import os
import random
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from backend_fixtures import RingClient, SLOT, put32  # noqa: E402


def scribble(c, rnd, hold=False):
    """Random bytes over the whole region; hold: over the slots only, so
    that the backend keeps the connection (and its index)."""
    mm = c.mm
    n = len(mm)
    step = 1 << 16
    for off in range(c.slots if hold else 0, n, step):
        k = min(step, n - off)
        mm[off:off + k] = rnd.randbytes(k)
    # valid-looking requests too, on random slots
    for _ in range(8):
        slot = rnd.randrange(c.nslots)
        off = c.slot_off(slot)
        struct.pack_into("<QIIII", mm, off, rnd.getrandbits(64),
                         rnd.randrange(3), rnd.randrange(1, 4),
                         rnd.randrange(0, 16), 0)
    if hold:
        return
    tail = rnd.choice([rnd.getrandbits(32), rnd.randrange(c.nslots)])
    put32(mm, c.sq + 64, tail)


def garbage_ctl(c, rnd):
    for _ in range(4):
        kind = rnd.randrange(4)
        if kind == 0:
            msg = struct.pack("<II", 3, 2)              # STATS_REQ
        elif kind == 1:
            msg = rnd.randbytes(rnd.randrange(1, 600))
        elif kind == 2:
            msg = struct.pack("<I", rnd.randrange(1, 6)) + \
                rnd.randbytes(rnd.randrange(0, 200))
        else:
            msg = b"\x01"
        try:
            c.sock.send(msg, socket.MSG_DONTWAIT)
        except OSError:
            pass
    for fd in (c.sq_efd, c.cq_efd):
        try:
            os.write(fd, struct.pack("<Q", rnd.randrange(1, 1 << 20)))
        except OSError:
            pass
    # drain what the backend sent (stats answers), never block
    try:
        while c.sock.recv(1 << 20, socket.MSG_DONTWAIT):
            pass
    except OSError:
        pass


def main():
    path, seconds = sys.argv[1], float(sys.argv[2])
    max_conns = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    rnd = random.Random(os.getpid())
    conns = []
    made = refused = dropped = rounds = held_max = 0
    end = time.monotonic() + seconds

    while time.monotonic() < end:
        rounds += 1
        # take every index it can
        while len(conns) < max_conns:
            try:
                c = RingClient(path, timeout=1)
                c.sock.setblocking(False)     # never wait below
                conns.append(c)
                made += 1
            except (OSError, AssertionError, ValueError, struct.error):
                refused += 1
                break
        held_max = max(held_max, len(conns))
        for c in list(conns):
            try:
                # the first one holds its index; the others get dropped
                scribble(c, rnd, hold=c is conns[0])
                garbage_ctl(c, rnd)
                os.write(c.sq_efd, struct.pack("<Q", 1))
            except (OSError, ValueError):
                pass
            # a dropped connection reads EOF: replace it
            try:
                if c.sock.recv(1 << 20, socket.MSG_DONTWAIT | socket.MSG_PEEK) \
                        == b"":
                    conns.remove(c)
                    c.close()
                    dropped += 1
            except BlockingIOError:
                pass
            except OSError:
                conns.remove(c)
                c.close()
                dropped += 1
        time.sleep(0.002)

    for c in conns:
        c.close()
    print(json.dumps({"made": made, "refused": refused, "dropped": dropped,
                      "rounds": rounds, "held_max": held_max,
                      "slot_header": SLOT.size}))


if __name__ == "__main__":
    main()
