#!/usr/bin/env python3
"""How fast placers in `placers_dir` start serving (issue 15's figures).

    bench/placers.py BINARY BIG.wasm SMALL.wasm [ROUNDS]

BINARY is a placerd build (release for figures), BIG.wasm a large placer (a
componentize-py or componentize-js build, 12-20 MB), SMALL.wasm a small one (e.g. a Rust
placer). With one reference runner and loopback ports, it measures:

  1. start: `serve` with BIG as `default_placer` and an empty `cache_dir`, from the
     process start to the first call placed by BIG (compiling), then ROUNDS restarts
     (compiled code read from `cache_dir`);
  2. swap: SMALL written into the running placerd's `placers_dir` as `naive.wasm` (a
     user placer over the built-in of that name), ROUNDS times with a new version each
     time (a custom section changes its hash), from the moment the write returns to the
     first call placed by that version; once written in place (open, write, close) and
     once written aside and renamed in (the way to publish atomically);
  3. delete: `naive.wasm` removed, to the first call placed by the built-in again.

Prints one markdown table of medians and ranges. Needs only python3 and the files given.
"""
import hashlib
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def placed_by(port):
    """The Fn-Placer of one call (`name/sha12`), or None when nothing answered."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("POST", "/invoke/bench", body=b"x")
        r = c.getresponse()
        r.read()
        c.close()
        return r.getheader("fn-placer") if r.status == 200 else None
    except OSError:
        return None


def until(port, want, t0, limit=60.0):
    """Seconds from `t0` until a call is placed by `want` (a `name/sha12` prefix)."""
    while time.monotonic() < t0 + limit:
        got = placed_by(port)
        if got and got.startswith(want):
            return time.monotonic() - t0
        time.sleep(0.001)
    raise SystemExit(f"no call placed by {want} within {limit} s (last: {placed_by(port)})")


def variant(base, k):
    """`base` with a custom section appended: the same placer, another hash."""
    name, payload = b"bench-version", str(k).encode()
    body = bytes([len(name)]) + name + payload
    return base + b"\x00" + bytes([len(body)]) + body


def sha12(data):
    return hashlib.sha256(data).hexdigest()[:12]


def spread(values):
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):.0f} ms ({min(ms):.0f}-{max(ms):.0f}, n={len(ms)})"


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    binary, big_path, small_path = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    big, small = open(big_path, "rb").read(), open(small_path, "rb").read()
    tmp = tempfile.mkdtemp(prefix="placerd-bench-")
    quiet = dict(os.environ, RUST_LOG="warn")
    runner_port = free_port()
    runner = subprocess.Popen([binary, "runner", "--listen", f"127.0.0.1:{runner_port}"],
                              stderr=subprocess.DEVNULL, env=quiet)
    procs = [runner]
    try:
        # 1. Start with BIG as the default placer: compiled once, then from the cache.
        placers = os.path.join(tmp, "placers")
        os.mkdir(placers)
        with open(os.path.join(placers, "big.wasm"), "wb") as f:
            f.write(big)
        config = os.path.join(tmp, "placerd.toml")
        with open(config, "w") as f:
            f.write(f'cache_dir = "{os.path.join(tmp, "cache")}"\n'
                    f'placers_dir = "{placers}"\n'
                    'default_placer = "big"\n')

        def start():
            port, admin = free_port(), free_port()
            t0 = time.monotonic()
            p = subprocess.Popen([binary, "serve", "--config", config, "--listen", f"127.0.0.1:{port}",
                                  "--admin-listen", f"127.0.0.1:{admin}", "--runner", f"127.0.0.1:{runner_port}"],
                                 stderr=subprocess.DEVNULL, env=quiet)
            procs.append(p)
            while True:
                got = placed_by(port)
                if got and got.startswith(f"big/{sha12(big)}"):
                    return p, port, time.monotonic() - t0
                if p.poll() is not None:
                    raise SystemExit(f"serve exited with {p.returncode}")
                time.sleep(0.002)

        p, _, compiling = start()
        p.terminate()
        p.wait()
        restarts = []
        for _ in range(rounds):
            p, port, seconds = start()
            restarts.append(seconds)
            p.terminate()
            p.wait()

        # 2. and 3. Swaps in a running placerd (built-in naive as the default placer).
        os.remove(os.path.join(placers, "big.wasm"))
        with open(config, "w") as f:
            f.write(f'cache_dir = "{os.path.join(tmp, "cache")}"\nplacers_dir = "{placers}"\n'
                    'default_placer = "naive"\n')
        port, admin = free_port(), free_port()
        p = subprocess.Popen([binary, "serve", "--config", config, "--listen", f"127.0.0.1:{port}",
                              "--admin-listen", f"127.0.0.1:{admin}", "--runner", f"127.0.0.1:{runner_port}"],
                             stderr=subprocess.DEVNULL, env=quiet)
        procs.append(p)
        builtin = None
        while builtin is None:
            got = placed_by(port)
            builtin = got if got and got.startswith("naive/") else None
            time.sleep(0.01)
        target = os.path.join(placers, "naive.wasm")
        in_place, renamed, deleted = [], [], []
        k = int(time.time())
        for i in range(rounds):
            for how, times in (("write", in_place), ("rename", renamed)):
                k += 1
                data = variant(small, k)
                if how == "write":
                    t0 = time.monotonic()
                    with open(target, "wb") as f:
                        f.write(data)
                else:
                    aside = os.path.join(placers, ".naive.wasm.tmp")
                    with open(aside, "wb") as f:
                        f.write(data)
                    t0 = time.monotonic()
                    os.rename(aside, target)
                times.append(until(port, f"naive/{sha12(data)}", t0))
                time.sleep(0.2)
            t0 = time.monotonic()
            os.remove(target)
            deleted.append(until(port, builtin, t0))
            time.sleep(0.2)
        print(f"`{binary}`, {len(big) / 1e6:.1f} MB and {len(small) / 1e3:.0f} kB placers, {rounds} rounds\n")
        print("| what | time |\n|---|---|")
        print(f"| start, big placer as default_placer, empty cache_dir (compiling) | {compiling * 1000:.0f} ms |")
        print(f"| restart, big placer from cache_dir, to its first placed call | {spread(restarts)} |")
        print(f"| small placer written in place, to its first placed call | {spread(in_place)} |")
        print(f"| small placer renamed in, to its first placed call | {spread(renamed)} |")
        print(f"| placer deleted, to the built-in's first placed call | {spread(deleted)} |")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
