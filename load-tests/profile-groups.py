#!/usr/bin/env python3
"""Groups `perf report` samples of load-tests/profile-noise.sh by what the
function is, as µs of CPU per answered lookup, one column per server.

    profile-groups.py DIR SAMPLED_SECONDS NAME...

DIR holds NAME.txt (`perf report -F period,sym`, cpu-clock periods in ns)
and NAME.json (the poz-load result of the same load).
"""
import json
import re
import sys

GROUPS = [
    ("X25519 (handshake DH)", r"curve25519|x25519|fiat_|montgomery|FieldElement|Scalar|EdwardsPoint|dalek"),
    ("ChaCha20-Poly1305", r"chacha|poly1305|ChaCha|Poly1305"),
    ("Noise hashing (SHA-256/BLAKE2, HKDF)", r"sha2|sha256|Sha256|blake2|Blake2|hkdf|hmac|compress256"),
    ("SHA3 (PoW, POZ hashes)", r"keccak|sha3|Keccak"),
    ("memory (malloc, copies)", r"malloc|free|memcpy|memmove|memset|realloc|_int_|tcache|arena"),
    ("kernel: TCP/IP and sockets", r"\[k\].*(tcp|inet|sock|ip_|skb|__sys_|sk_|net_|nf_|dev_|loopback|__x64_sys_(accept|connect|close|read|write|recv|send|shutdown))"),
    ("kernel: scheduling, epoll, syscalls", r"\[k\].*(sched|schedule|epoll|futex|entry_SYSCALL|syscall|switch|wake|ep_|__x64_sys|timer|hrtimer|irq|rcu)"),
    ("kernel: other", r"\[k\]"),
    ("SQLite", r"sqlite|sqlx"),
    ("gRPC/HTTP2 (tonic, h2, hyper, prost, tower)", r"h2::|hyper|tonic|prost|tower"),
    ("tokio runtime and timers", r"tokio|mio::|parking_lot|crossbeam"),
    ("POZ (gate, codec, edge, gateway)", r"poz"),
    ("snow (Noise state machine)", r"snow::"),
]


def grouped(path):
    totals = {}
    for line in open(path):
        m = re.match(r"\s*(\d+)\s+(\[[k.]\])\s+(.*)", line)
        if not m:
            continue
        period, kind, sym = int(m.group(1)), m.group(2), m.group(3)
        key = f"{kind} {sym}"
        for name, pat in GROUPS:
            if re.search(pat, key):
                break
        else:
            name = "other"
        totals[name] = totals.get(name, 0) + period
    return totals


d, secs, names = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
columns = {}
for n in names:
    r = json.load(open(f"{d}/{n}.json"))
    answered = r["queries_per_second"] * secs
    columns[n] = ({g: ns / 1000 / answered for g, ns in grouped(f"{d}/{n}.txt").items()}, r["queries_per_second"])
order = [g for g, _ in GROUPS] + ["other"]
print(f"{'µs of server CPU per answered lookup':<46}" + "".join(f"{n:>12}" for n in names))
for g in order:
    if any(g in c for c, _ in columns.values()):
        print(f"{g:<46}" + "".join(f"{columns[n][0].get(g, 0):>12.1f}" for n in names))
print(f"{'total':<46}" + "".join(f"{sum(columns[n][0].values()):>12.1f}" for n in names))
print(f"{'answered/s during the profile':<46}" + "".join(f"{columns[n][1]:>12.0f}" for n in names))
