"""An independent Noise peer for the v1 interoperability tests.

Uses the pure-Python `noiseprotocol` package (not our code) to run
Noise_NNpsk0_25519_ChaChaPoly_SHA256 over a TCP connection to the Rust test, with the same
u32 big-endian frames as the EventDBX control protocol.

Usage: noise_peer.py PORT ROLE TOKEN [PROLOGUE_HEX]
  ROLE is "initiator" or "responder". After the handshake the initiator sends three messages
  and expects each back reversed; the responder answers each message with its reverse.
Exit status 0 on success; 3 when the handshake fails (the Rust side checks which).
"""

import hashlib
import socket
import struct
import sys

from noise.connection import NoiseConnection


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("peer closed")
        buf += chunk
    return buf


def read_frame(sock):
    (length,) = struct.unpack(">I", read_exact(sock, 4))
    return read_exact(sock, length)


def write_frame(sock, payload):
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def main():
    port, role, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    prologue = bytes.fromhex(sys.argv[4]) if len(sys.argv) > 4 else b""
    sock = socket.create_connection(("127.0.0.1", port))
    noise = NoiseConnection.from_name(b"Noise_NNpsk0_25519_ChaChaPoly_SHA256")
    if role == "initiator":
        noise.set_as_initiator()
    else:
        noise.set_as_responder()
    noise.set_psks(hashlib.sha256(token.strip().encode()).digest())
    noise.set_prologue(prologue)
    noise.start_handshake()
    try:
        if role == "initiator":
            write_frame(sock, noise.write_message())
            noise.read_message(read_frame(sock))
        else:
            noise.read_message(read_frame(sock))
            write_frame(sock, noise.write_message())
    except Exception as exc:  # noqa: BLE001 - any failure here is a handshake failure
        print(f"handshake failed: {exc!r}", file=sys.stderr)
        sys.exit(3)
    if role == "initiator":
        for i in range(3):
            message = f"request {i} from python".encode() * (i + 1)
            write_frame(sock, noise.encrypt(message))
            reply = noise.decrypt(read_frame(sock))
            assert reply == message[::-1], (reply, message)
    else:
        while True:
            try:
                frame = read_frame(sock)
            except EOFError:
                break
            write_frame(sock, noise.encrypt(noise.decrypt(frame)[::-1]))
    sock.close()


if __name__ == "__main__":
    main()
