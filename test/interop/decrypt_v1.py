#!/usr/bin/env python3
"""Independent sealbox v1 decryptor, written from docs/FORMAT.md alone.

Usage:
  decrypt_v1.py vectors FILE                 check every known-answer vector in FILE
  decrypt_v1.py decrypt --dek HEX < ct > pt  decrypt stdin with a raw 32-byte DEK

`decrypt` writes nothing to stdout unless the whole message verified; on any failure it prints
one line to stderr and exits 2.

Only the standard library and the `cryptography` package are used.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import struct
import sys
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

# --- constants (FORMAT.md "Header", "Keys", "Chunks") -------------------------------------------

MAGIC = b"SBX"
VERSION = 1
SUITE_AES256GCM_HKDF_HMAC_COMMIT = 0x0001
KNOWN_SUITES = {SUITE_AES256GCM_HKDF_HMAC_COMMIT}

MESSAGE_ID_LEN = 32
COMMITMENT_LEN = 32
HEADER_TAG_LEN = 32
GCM_TAG_LEN = 16
DEK_LEN = 32

CHUNK_SIZE_MIN = 4096
CHUNK_SIZE_MAX = 4194304
CONTEXT_LEN_MIN = 2
CONTEXT_LEN_MAX = 8192
CONTEXT_MAX_PAIRS = 64
KEY_ID_LEN_MIN = 1
KEY_ID_LEN_MAX = 1024
WRAP_ALG_LEN_MIN = 1
WRAP_ALG_LEN_MAX = 32
WRAPPED_DEK_LEN_MIN = 1
WRAPPED_DEK_LEN_MAX = 1024
HEADER_MAX = 65536
MAX_CHUNKS = 2**32

WRAP_ALG_RE = re.compile(rb"\A[A-Za-z0-9_-]+\Z")
KDF_INFO_LABEL = b"sealbox/v1 message keys"  # 23 ASCII bytes, followed by the suite id


class FormatError(Exception):
    """Any reason to reject a ciphertext. The message is the one-line reason."""


# --- header ------------------------------------------------------------------------------------


@dataclass
class Header:
    version: int
    suite: int
    message_id: bytes
    chunk_size: int
    context_bytes: bytes
    context: dict[str, str]
    commitment: bytes
    key_id: str
    wrap_algorithm: str
    wrapped_dek: bytes
    signed: bytes  # header fields 1-14 exactly as they appeared
    tag: bytes  # field 15
    length: int  # total header length (fields 1-15)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0:
            raise FormatError(f"internal: negative length for {what}")
        if self.pos + n > len(self.data):
            raise FormatError(f"truncated header: need {n} bytes for {what} at offset {self.pos}")
        if self.pos + n > HEADER_MAX:
            raise FormatError(f"header longer than {HEADER_MAX} bytes")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack(">H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack(">I", self.take(4, what))[0]


def _check_bound(value: int, lo: int, hi: int, what: str) -> None:
    if not lo <= value <= hi:
        raise FormatError(f"{what} {value} outside [{lo}, {hi}]")


def _utf8(b: bytes, what: str) -> str:
    try:
        return b.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise FormatError(f"{what} is not valid UTF-8") from e


def parse_context(enc: bytes) -> dict[str, str]:
    """Decodes a canonical context encoding; rejects anything non-canonical."""
    if len(enc) < 2:
        raise FormatError("context: shorter than its pair count")
    if len(enc) > CONTEXT_LEN_MAX:
        raise FormatError(f"context: longer than {CONTEXT_LEN_MAX} bytes")
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(enc):
            raise FormatError(f"context: truncated {what}")
        out = enc[pos : pos + n]
        pos += n
        return out

    count = struct.unpack(">H", take(2, "pair count"))[0]
    if count > CONTEXT_MAX_PAIRS:
        raise FormatError(f"context: {count} pairs, more than {CONTEXT_MAX_PAIRS}")
    out: dict[str, str] = {}
    prev_key: bytes | None = None
    for i in range(count):
        klen = struct.unpack(">H", take(2, f"key length of pair {i}"))[0]
        kbytes = take(klen, f"key of pair {i}")
        vlen = struct.unpack(">H", take(2, f"value length of pair {i}"))[0]
        vbytes = take(vlen, f"value of pair {i}")
        if klen == 0:
            raise FormatError(f"context: empty key in pair {i}")
        # bytes comparison in Python is exactly "lexicographic, shorter-is-smaller on a common prefix"
        if prev_key is not None and not prev_key < kbytes:
            raise FormatError(f"context: keys not strictly sorted / unique at pair {i}")
        key = _utf8(kbytes, f"context key of pair {i}")
        value = _utf8(vbytes, f"context value of pair {i}")
        out[key] = value
        prev_key = kbytes
    if pos != len(enc):
        raise FormatError(f"context: {len(enc) - pos} bytes after the last pair")
    return out


def encode_context(ctx: dict[str, str]) -> bytes:
    """Canonical encoding (used only to double-check parse_context round-trips)."""
    items = sorted(((k.encode("utf-8"), v.encode("utf-8")) for k, v in ctx.items()), key=lambda kv: kv[0])
    out = struct.pack(">H", len(items))
    for k, v in items:
        out += struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v
    return out


def parse_header(data: bytes) -> Header:
    r = _Reader(data)
    magic = r.take(3, "magic")
    if magic != MAGIC:
        raise FormatError(f"wrong magic {magic.hex()}")
    version = r.u8("version")
    if version != VERSION:
        raise FormatError(f"unsupported version {version}")
    suite = r.u16("suite id")
    if suite not in KNOWN_SUITES:
        raise FormatError(f"unknown suite 0x{suite:04x}")
    message_id = r.take(MESSAGE_ID_LEN, "message id")
    chunk_size = r.u32("chunk size")
    _check_bound(chunk_size, CHUNK_SIZE_MIN, CHUNK_SIZE_MAX, "chunk size")
    lc = r.u16("context length")
    _check_bound(lc, CONTEXT_LEN_MIN, CONTEXT_LEN_MAX, "context length")
    context_bytes = r.take(lc, "context")
    context = parse_context(context_bytes)
    commitment = r.take(COMMITMENT_LEN, "key commitment")
    lk = r.u16("key id length")
    _check_bound(lk, KEY_ID_LEN_MIN, KEY_ID_LEN_MAX, "key id length")
    key_id = _utf8(r.take(lk, "key id"), "key id")
    la = r.u8("wrap algorithm length")
    _check_bound(la, WRAP_ALG_LEN_MIN, WRAP_ALG_LEN_MAX, "wrap algorithm length")
    alg_bytes = r.take(la, "wrap algorithm")
    if not WRAP_ALG_RE.match(alg_bytes):
        raise FormatError("wrap algorithm has characters outside A-Z a-z 0-9 _ -")
    lw = r.u16("wrapped DEK length")
    _check_bound(lw, WRAPPED_DEK_LEN_MIN, WRAPPED_DEK_LEN_MAX, "wrapped DEK length")
    wrapped_dek = r.take(lw, "wrapped DEK")
    signed_end = r.pos
    tag = r.take(HEADER_TAG_LEN, "header tag")
    expected_len = 44 + lc + 32 + 2 + lk + 1 + la + 2 + lw + 32
    assert r.pos == expected_len, (r.pos, expected_len)
    return Header(
        version=version,
        suite=suite,
        message_id=message_id,
        chunk_size=chunk_size,
        context_bytes=context_bytes,
        context=context,
        commitment=commitment,
        key_id=key_id,
        wrap_algorithm=alg_bytes.decode("ascii"),
        wrapped_dek=wrapped_dek,
        signed=data[:signed_end],
        tag=tag,
        length=r.pos,
    )


# --- keys --------------------------------------------------------------------------------------


@dataclass
class MessageKeys:
    encryption_key: bytes
    header_key: bytes
    commitment: bytes


def derive_keys(dek: bytes, message_id: bytes, suite: int) -> MessageKeys:
    if len(dek) != DEK_LEN:
        raise FormatError(f"DEK is {len(dek)} bytes, expected {DEK_LEN}")
    info = KDF_INFO_LABEL + struct.pack(">H", suite)
    assert len(info) == 25
    okm = HKDF(algorithm=hashes.SHA256(), length=96, salt=message_id, info=info).derive(dek)
    return MessageKeys(encryption_key=okm[0:32], header_key=okm[32:64], commitment=okm[64:96])


def unwrap_dek(header: Header, kek: bytes) -> bytes:
    if header.wrap_algorithm != "A256KW":
        raise FormatError(f"wrap algorithm {header.wrap_algorithm!r} not supported by this tool")
    if len(kek) != 32:
        raise FormatError("A256KW KEK must be 32 bytes")
    try:
        dek = aes_key_unwrap(kek, header.wrapped_dek)
    except (InvalidUnwrap, ValueError) as e:
        raise FormatError(f"DEK unwrap failed: {e or type(e).__name__}") from e
    if len(dek) != DEK_LEN:
        raise FormatError(f"unwrapped DEK is {len(dek)} bytes, expected {DEK_LEN}")
    return dek


def verify_header(header: Header, keys: MessageKeys, expected_context: dict[str, str] | None) -> None:
    # FORMAT.md "Keys": in this order, stop at the first failure, before decrypting anything.
    if not hmac.compare_digest(keys.commitment, header.commitment):
        raise FormatError("key commitment mismatch")
    tag = hmac.new(keys.header_key, header.signed, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, header.tag):
        raise FormatError("header tag mismatch")
    if expected_context is not None:
        for k, v in expected_context.items():
            if k not in header.context:
                raise FormatError(f"context: expected key {k!r} missing")
            if not hmac.compare_digest(header.context[k].encode("utf-8"), v.encode("utf-8")):
                raise FormatError(f"context: value of {k!r} differs")


# --- body --------------------------------------------------------------------------------------


def split_body(body: bytes, chunk_size: int) -> list[bytes]:
    """FORMAT.md "Splitting the body"."""
    r = chunk_size + GCM_TAG_LEN
    b = len(body)
    if b < GCM_TAG_LEN:
        raise FormatError(f"truncated: body is {b} bytes, less than one tag")
    n = 1 + max(0, -(-(b - r) // r))  # ceil division
    if n > MAX_CHUNKS:
        raise FormatError(f"too many chunks ({n})")
    last_len = b - (n - 1) * r
    # The spec says the final chunk is 16..R bytes; the formula alone can leave 1..15 bytes.
    if last_len < GCM_TAG_LEN:
        raise FormatError(f"malformed body: final chunk is {last_len} bytes, shorter than a tag")
    # An empty final chunk is only valid when it is the only chunk (empty message).
    if n > 1 and last_len == GCM_TAG_LEN:
        raise FormatError("empty final chunk after a non-final chunk")
    chunks = [body[i * r : (i + 1) * r] for i in range(n - 1)]
    chunks.append(body[(n - 1) * r :])
    return chunks


def chunk_nonce(i: int, final: bool) -> bytes:
    return b"\x00" * 7 + struct.pack(">IB", i, 1 if final else 0)


def chunk_aad(message_id: bytes, i: int, final: bool) -> bytes:
    return message_id + struct.pack(">IB", i, 1 if final else 0)


def open_body(body: bytes, header: Header, keys: MessageKeys) -> bytes:
    aead = AESGCM(keys.encryption_key)
    chunks = split_body(body, header.chunk_size)
    n = len(chunks)
    out = []
    for i, chunk in enumerate(chunks):
        final = i == n - 1
        try:
            pt = aead.decrypt(chunk_nonce(i, final), chunk, chunk_aad(header.message_id, i, final))
        except InvalidTag:
            if final:
                try:
                    aead.decrypt(chunk_nonce(i, False), chunk, chunk_aad(header.message_id, i, False))
                except InvalidTag:
                    pass
                else:
                    raise FormatError(f"truncated after chunk {i}") from None
            raise FormatError(f"chunk {i} tag mismatch") from None
        if not final and len(pt) != header.chunk_size:  # cannot happen given split_body, kept as a guard
            raise FormatError(f"non-final chunk {i} holds {len(pt)} bytes")
        out.append(pt)
    return b"".join(out)


def decrypt(
    data: bytes,
    *,
    dek: bytes | None = None,
    kek: bytes | None = None,
    expected_context: dict[str, str] | None = None,
) -> tuple[Header, bytes, bytes]:
    """Returns (header, dek, plaintext). Exactly one of dek / kek must be given."""
    header = parse_header(data)
    if dek is None:
        assert kek is not None
        dek = unwrap_dek(header, kek)
    keys = derive_keys(dek, header.message_id, header.suite)
    verify_header(header, keys, expected_context)
    plaintext = open_body(data[header.length :], header, keys)
    return header, dek, plaintext


# --- CLI ---------------------------------------------------------------------------------------


def cmd_vectors(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    failures = 0
    if doc.get("formatVersion") != 1:
        print(f"FAIL file: formatVersion {doc.get('formatVersion')!r} is not 1")
        return 1
    kek = bytes.fromhex(doc["kek"])
    vectors = doc["vectors"]
    if not vectors:
        print("FAIL file: no vectors")
        return 1
    for v in vectors:
        name = v.get("name", "?")
        try:
            ct = bytes.fromhex(v["ciphertext"])
            header, dek, pt = decrypt(ct, kek=kek, expected_context=v["context"])
            problems = []
            if not hmac.compare_digest(dek, bytes.fromhex(v["dek"])):
                problems.append("unwrapped DEK differs")
            if pt != bytes.fromhex(v["plaintext"]):
                problems.append("plaintext differs")
            if header.context != v["context"]:
                problems.append(f"context differs: {header.context!r}")
            if encode_context(header.context) != header.context_bytes:
                problems.append("context does not re-encode to the same bytes")
            if header.message_id.hex() != v["messageId"]:
                problems.append("message id differs")
            if header.chunk_size != v["chunkSize"]:
                problems.append("chunk size differs")
            if "keyId" in doc and header.key_id != doc["keyId"]:
                problems.append(f"key id {header.key_id!r} differs from file keyId")
            if "wrapAlgorithm" in doc and header.wrap_algorithm != doc["wrapAlgorithm"]:
                problems.append(f"wrap algorithm {header.wrap_algorithm!r} differs")
            if problems:
                failures += 1
                print(f"FAIL {name}: " + "; ".join(problems))
            else:
                n = len(split_body(ct[header.length :], header.chunk_size))
                print(f"ok   {name}: {len(pt)} bytes, {n} chunk(s), header {header.length} bytes")
        except (FormatError, KeyError, ValueError) as e:
            failures += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    print(f"{len(vectors) - failures}/{len(vectors)} vectors passed")
    return 0 if failures == 0 else 1


def cmd_decrypt(dek_hex: str) -> int:
    try:
        dek = bytes.fromhex(dek_hex)
    except ValueError:
        print("error: --dek is not hex", file=sys.stderr)
        return 2
    if len(dek) != DEK_LEN:
        print(f"error: --dek must be {DEK_LEN} bytes", file=sys.stderr)
        return 2
    data = sys.stdin.buffer.read()
    try:
        _, _, plaintext = decrypt(data, dek=dek)
    except FormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - any failure must exit 2 without output
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(plaintext)
    sys.stdout.buffer.flush()
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pv = sub.add_parser("vectors", help="check a known-answer vector file")
    pv.add_argument("file")
    pd = sub.add_parser("decrypt", help="decrypt stdin to stdout with a raw DEK")
    pd.add_argument("--dek", required=True, help="the 32-byte DEK in hex")
    args = p.parse_args(argv)
    if args.cmd == "vectors":
        return cmd_vectors(args.file)
    return cmd_decrypt(args.dek)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
