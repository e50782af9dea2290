#!/usr/bin/env python3
"""An independent checker of cellos checkpoints, sharing no code with cellos: Python's hashlib
and base64 for the RFC 9162 tree and the C2SP note, the openssl CLI for Ed25519.

    check_checkpoint.py LOG CHECKPOINTS PUBLIC_KEY.pem

Checks the last checkpoint in CHECKPOINTS: its signed-note key ID (SHA-256(name || 0x0A || 0x01
|| public key)[:4]) and Ed25519 signature over the note text, and that the RFC 9162 root of the
first <size> events of LOG (leaf = SHA-256(0x00 || dssematerial)) is its root hash. The tree's
first event is the one whose sequence the origin's last "/<n>" names. Exit 0 and "OK" or 1."""
import base64
import hashlib
import json
import subprocess
import sys
import tempfile


def mth(leaves):
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def main(log_path, checkpoints_path, key_path):
    text = open(checkpoints_path, encoding="utf-8").read()
    # The last note: its text is the three lines before the blank line before its signatures.
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    end = len(lines)
    while lines[end - 1].startswith("\u2014 "):
        end -= 1
    signatures, body = lines[end:], lines[end - 4:end - 1]
    assert lines[end - 1] == "", "no blank line before the signatures"
    origin, size, root = body[0], int(body[1]), base64.b64decode(body[2])
    note = ("\n".join(body) + "\n").encode()

    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", key_path, "-outform", "DER"],
                         check=True, capture_output=True).stdout
    public = der[-32:]  # SubjectPublicKeyInfo of Ed25519: a fixed 12-byte prefix, then the key
    key_id = hashlib.sha256(origin.encode() + b"\n\x01" + public).digest()[:4]
    verified = False
    for line in signatures:
        name, sig = line[2:].split(" ")
        raw = base64.b64decode(sig)
        if name != origin or raw[:4] != key_id:
            continue
        with tempfile.NamedTemporaryFile() as msg, tempfile.NamedTemporaryFile() as sigfile:
            msg.write(note)
            msg.flush()
            sigfile.write(raw[4:])
            sigfile.flush()
            result = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey",
                                     key_path, "-rawin", "-in", msg.name, "-sigfile",
                                     sigfile.name], capture_output=True)
        if result.returncode != 0:
            print("FAILED: bad checkpoint signature")
            return 1
        verified = True
    if not verified:
        print("FAILED: no signature by this key")
        return 1

    start = int(origin.rsplit("/", 1)[1])
    leaves = []
    for line in open(log_path, encoding="utf-8"):
        event = json.loads(line)
        if int(event["sequence"]) >= start:
            leaves.append(hashlib.sha256(b"\x00" + event["dssematerial"].encode()).digest())
    if len(leaves) < size:
        print(f"FAILED: the log holds {len(leaves)} events, the checkpoint commits to {size}")
        return 1
    if mth(leaves[:size]) != root:
        print("FAILED: root hash mismatch")
        return 1
    print(f"OK: {origin} tree size {size}, root {body[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
