#!/usr/bin/env python3
"""Idle cost and memory under stalled uploads of a placerd binary (issue 14's figures).

    bench/hardening.py BINARY [BINARY ...]

For each binary: start `placerd serve` on loopback ports with one reference runner and
an empty placers folder, then
  1. idle: CPU used over 20 s with no traffic (after 3 s of start-up), percent of a core;
  2. stalled: 20 connections each declare a 6 MiB body, send 6,000,000 bytes of it and
     stall; RSS before, 10 s later, and 35 s later (past the default 30 s body timeout);
     then 60 such connections, to show the max_buffered_bytes cap (RSS at 10 s).
Prints one markdown table. Needs only python3 and the binaries.
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / (1 << 20)


def wait_port(port, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def stall(port, n, declared=6 << 20, sent=6_000_000):
    conns = []
    chunk = b"x" * 65536
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"POST /invoke/up HTTP/1.1\r\nhost: x\r\ncontent-length: {declared}\r\n\r\n".encode())
        s.setblocking(False)
        conns.append([s, sent])
    # Send what the server takes, without blocking on one connection.
    deadline = time.time() + 20
    while any(left > 0 for _, left in conns) and time.time() < deadline:
        for c in conns:
            if c[1] <= 0:
                continue
            try:
                c[1] -= c[0].send(chunk[: min(len(chunk), c[1])])
            except BlockingIOError:
                pass
            except OSError:
                c[1] = 0  # refused (503) or closed
    return [c[0] for c in conns]


def measure(binary):
    row = {}
    with tempfile.TemporaryDirectory() as tmp:
        runner_port, port, admin = free_port(), free_port(), free_port()
        runner = subprocess.Popen([binary, "runner", "--listen", f"127.0.0.1:{runner_port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        placers = os.path.join(tmp, "placers")
        os.mkdir(placers)
        p = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
             "--runner", f"127.0.0.1:{runner_port}", "--placers-dir", placers, "--default-placer", "naive"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            time.sleep(3)
            c0, t0 = cpu_seconds(p.pid), time.time()
            time.sleep(20)
            row["idle CPU, % of a core"] = f"{100 * (cpu_seconds(p.pid) - c0) / (time.time() - t0):.2f}"
            row["RSS idle, MiB"] = f"{rss_mib(p.pid):.0f}"
            conns = stall(port, 20)
            time.sleep(10)
            row["20 stalled uploads, RSS at 10 s"] = f"{rss_mib(p.pid):.0f}"
            time.sleep(25)
            row["... at 35 s"] = f"{rss_mib(p.pid):.0f}"
            waiting = 0  # neither answered nor closed
            for s in conns:
                try:
                    s.recv(4096)  # an answer (408) or end of stream (closed)
                except BlockingIOError:
                    waiting += 1
                except OSError:
                    pass
                s.close()
            row["... unanswered and open at 35 s"] = str(waiting)
            time.sleep(2)
            conns = stall(port, 60)
            time.sleep(10)
            row["60 stalled uploads, RSS at 10 s"] = f"{rss_mib(p.pid):.0f}"
            for s in conns:
                s.close()
        finally:
            p.terminate()
            runner.terminate()
            p.wait()
            runner.wait()
    return row


def main():
    binaries = sys.argv[1:]
    if not binaries:
        raise SystemExit(__doc__)
    rows = [measure(b) for b in binaries]
    keys = list(rows[0])
    print("| | " + " | ".join(binaries) + " |")
    print("|---|" + "---:|" * len(binaries))
    for k in keys:
        print(f"| {k} | " + " | ".join(r.get(k, "-") for r in rows) + " |")


if __name__ == "__main__":
    main()
