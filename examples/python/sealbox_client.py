#!/usr/bin/env python3
"""A small sealbox client in Python: health check, Encrypt/Decrypt, a streamed round trip, and how a
sealbox error reads (status + sealbox-error-code trailer). See README.md beside this file.

Needs Debian's python3-grpcio (and python3-grpc-tools to generate the stubs):
  apt-get install python3-grpcio python3-grpc-tools

  python3 examples/python/sealbox_client.py --target unix:.sealbox/sealbox.sock --alias dev

Without --stubs it generates the stubs into a temporary directory first (needs grpc_tools).
"""
import argparse
import os
import sys
import tempfile

try:
    import grpc
except ImportError:
    sys.exit("grpcio is missing: apt-get install python3-grpcio (and run /usr/bin/python3, "
             "not another interpreter without Debian's packages)")

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "proto")
ERROR_CODE_TRAILER = "sealbox-error-code"


def generate_stubs(out_dir):
    """Generates sealbox.v1 and grpc.health.v1 stubs into out_dir, as README.md shows.

    The health proto is compiled under the virtual path grpc_health/v1/ (protoc's -IVIRTUAL=DIR), so
    its modules are grpc_health.v1.health_pb2[_grpc], not grpc.health.v1...: a top-level `grpc`
    package of our own would collide with grpcio's (README.md, "The health stubs").
    """
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.exit("grpc_tools is missing: apt-get install python3-grpc-tools, or pass --stubs DIR")
    args = [
        "protoc",
        "-I" + PROTO_DIR,
        "-Igrpc_health/v1=" + os.path.join(PROTO_DIR, "grpc", "health", "v1"),
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
        "sealbox/v1/sealbox.proto",
        "grpc_health/v1/health.proto",
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed to generate the stubs (see its message above)")


def error_code(err):
    """The stable sealbox error code of a failed call (trailer), or None."""
    for key, value in err.trailing_metadata() or ():
        if key == ERROR_CODE_TRAILER:
            return value
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="unix:.sealbox/sealbox.sock",
                        help="sealbox's address: unix:PATH (default) or host:port")
    parser.add_argument("--alias", default="dev", help="a configured key alias (sealbox dev: dev)")
    parser.add_argument("--stubs", help="directory with stubs generated as README.md shows")
    parser.add_argument("--message", default="hello from Python", help="the plaintext to encrypt")
    parser.add_argument("--save-ciphertext", metavar="FILE", help="also write the unary ciphertext here")
    args = parser.parse_args()

    stubs = args.stubs
    if stubs is None:
        stubs = tempfile.mkdtemp(prefix="sealbox-stubs-")
        generate_stubs(stubs)
    sys.path.insert(0, stubs)
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from sealbox.v1 import sealbox_pb2, sealbox_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "sealbox.v1.Envelope"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            print('health "%s": %s' % (service, health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)))

        envelope = sealbox_pb2_grpc.EnvelopeStub(channel)
        plaintext = args.message.encode()
        context = {"example": "python"}
        sealed = envelope.Encrypt(
            sealbox_pb2.EncryptRequest(key_alias=args.alias, plaintext=plaintext, context=context), timeout=30)
        print("encrypt: %d bytes -> %d bytes under %s" % (len(plaintext), len(sealed.ciphertext), sealed.key_id))
        if args.save_ciphertext:
            with open(args.save_ciphertext, "wb") as out:
                out.write(sealed.ciphertext)

        # expected_context proves the ciphertext belongs here: a mismatch fails before any plaintext.
        opened = envelope.Decrypt(
            sealbox_pb2.DecryptRequest(ciphertext=sealed.ciphertext, expected_context=context), timeout=30)
        if opened.plaintext != plaintext or dict(opened.context) != context:
            print("decrypt: MISMATCH", file=sys.stderr)
            return 1
        print("decrypt: round trip OK (%d bytes, context %s)" % (len(opened.plaintext), dict(opened.context)))

        # Streams: an init message first, then data of any size; the answer starts with metadata.
        big = os.urandom(300_000)
        pieces = [big[i:i + 64_000] for i in range(0, len(big), 64_000)]
        requests = [sealbox_pb2.EncryptStreamRequest(
            init=sealbox_pb2.EncryptStreamInit(key_alias=args.alias, context=context))]
        requests += [sealbox_pb2.EncryptStreamRequest(data=piece) for piece in pieces]
        ciphertext = b"".join(r.data for r in envelope.EncryptStream(iter(requests), timeout=60)
                              if r.WhichOneof("msg") == "data")
        back = [sealbox_pb2.DecryptStreamRequest(init=sealbox_pb2.DecryptStreamInit(expected_context=context)),
                sealbox_pb2.DecryptStreamRequest(data=ciphertext)]
        decrypted = b"".join(r.data for r in envelope.DecryptStream(iter(back), timeout=60)
                             if r.WhichOneof("msg") == "data")
        if decrypted != big:
            print("stream: MISMATCH", file=sys.stderr)
            return 1
        print("stream: round trip OK (%d bytes in %d messages)" % (len(big), len(pieces)))

        # A refusal carries a gRPC status and sealbox's stable code in the trailer.
        try:
            envelope.Decrypt(sealbox_pb2.DecryptRequest(
                ciphertext=sealed.ciphertext, expected_context={"example": "elsewhere"}), timeout=30)
            print("wrong context: accepted, which it must not be", file=sys.stderr)
            return 1
        except grpc.RpcError as err:
            print("wrong context: %s %s" % (err.code().name, error_code(err)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
