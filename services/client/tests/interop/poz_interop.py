#!/usr/bin/env python3
"""An independent POZ client: Noise NK from PyPI's `noiseprotocol`, proof
of work with hashlib.sha3_256, frames written by hand from docs/SPEC.md.
It asks a POZ server for a challenge, solves it, looks a handle up over
Noise NK and checks the answer. Exit 0 when everything matches.

usage: poz_interop.py HOST NOISE_PORT PLAIN_PORT SERVER_KEY_HEX DOMAIN HANDLE RECORD_ID_HEX
"""
import hashlib
import os
import socket
import struct
import sys
import time

from noise.connection import Keypair, NoiseConnection


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed")
        out += chunk
    return out


def str8(s):
    b = s.encode()
    return bytes([len(b)]) + b


def request(qtype, rid, payload, pow_fields=None):
    head = struct.pack(">BBH", 0, qtype, rid)
    if pow_fields is None:
        head += b"\x00"
    else:
        challenge, ts, nonce = pow_fields
        head += b"\x01" + challenge + struct.pack(">QQ", ts, nonce)
    return head + struct.pack(">H", len(payload)) + payload


def parse_response(frame):
    version, status, rid, length = struct.unpack(">BBHI", frame[:8])
    assert version == 0, version
    payload = frame[8:]
    assert len(payload) == length, (len(payload), length)
    return status, rid, payload


def noise_exchange(host, port, server_key, frame):
    s = socket.create_connection((host, port), timeout=10)
    n = NoiseConnection.from_name(b"Noise_NK_25519_ChaChaPoly_SHA256")
    n.set_as_initiator()
    n.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, server_key)
    n.start_handshake()
    msg = n.write_message(frame)
    s.sendall(struct.pack(">H", len(msg)) + msg)
    got = b""
    first = True
    while True:
        (length,) = struct.unpack(">H", recv_exact(s, 2))
        m = recv_exact(s, length)
        got += n.read_message(m) if first else n.decrypt(m)
        first = False
        if len(got) >= 8 and len(got) == 8 + struct.unpack(">I", got[4:8])[0]:
            break
    s.close()
    return parse_response(got)


def plain_exchange(host, port, frame):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(frame)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return parse_response(got)


def leading_zero_bits(h):
    n = 0
    for b in h:
        if b == 0:
            n += 8
            continue
        return n + (8 - b.bit_length())
    return n


def solve(challenge, difficulty):
    ts = int(time.time() * 1000)
    nonce = int.from_bytes(os.urandom(4), "big")
    while True:
        h = hashlib.sha3_256(challenge + struct.pack(">QQ", ts, nonce)).digest()
        if leading_zero_bits(h) >= difficulty:
            return ts, nonce
        nonce += 1


def main():
    host, nport, pport, key_hex, domain, handle, record_hex = sys.argv[1:8]
    key = bytes.fromhex(key_hex)
    record_id = bytes.fromhex(record_hex)

    # CHALLENGE over Noise.
    st, rid, payload = noise_exchange(host, int(nport), key, request(0x13, 1, b""))
    assert (st, rid) == (0, 1), (st, rid)
    difficulty = payload[0]
    challenge = payload[1:17]
    assert difficulty > 0, "the test server runs with a difficulty"

    # IDENTITY over Noise with a proof of work.
    ts, nonce = solve(challenge, difficulty)
    q = str8(domain) + str8(handle)
    st, rid, payload = noise_exchange(host, int(nport), key, request(0x10, 2, q, (challenge, ts, nonce)))
    assert (st, rid) == (0, 2), ("IDENTITY", st, rid, payload)
    # IdentityAnswer = SignedEntry: kind(1) body_len(4) body; body = issuer(32) subject(32) str8 handle ...
    kind = payload[0]
    (body_len,) = struct.unpack(">I", payload[1:5])
    body = payload[5 : 5 + body_len]
    assert kind == 1, kind
    assert body[:32] == record_id, "binding issued by the expected provider"
    hl = body[64]
    assert body[65 : 65 + hl].decode() == handle

    # The same proof again is a replay: POW_REQUIRED with reason REPLAYED (3).
    st, rid, payload = noise_exchange(host, int(nport), key, request(0x10, 3, q, (challenge, ts, nonce)))
    assert (st, payload[0]) == (2, 3), ("replay", st, payload[:1])

    # SERIAL over plaintext 7074 with a fresh proof.
    ts, nonce = solve(challenge, difficulty)
    st, rid, payload = plain_exchange(host, int(pport), request(0x03, 4, str8(domain), (challenge, ts, nonce)))
    assert (st, rid) == (0, 4), ("SERIAL", st, rid)
    assert payload[:32] == record_id
    print("interop ok: challenge, IDENTITY over Noise NK with PoW, replay refused, SERIAL over plaintext")


if __name__ == "__main__":
    main()
