"""The inference protocol's binary-data extension on one keep-alive HTTP/1.1 connection: the hot path to Triton.

:func:`encode_request` writes what ``tritonclient.http`` writes for binary tensors (a JSON header of
``Inference-Header-Content-Length`` bytes, then each input's raw little-endian bytes; a BYTES element
is a 4-byte length and its bytes) and asks for every output as binary; :func:`decode_response` reads
the answer back into arrays. :class:`Connection` sends a request in one write (TCP_NODELAY) and reads
the status, headers and a ``Content-Length`` body: what Triton answers, without ``http.client``'s
general header parsing, which cost more per call than the rest of the request together.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from matih_triton.model_config import Tensor

HEADER_LENGTH = b"inference-header-content-length"
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
WIRE_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}


class ProtocolError(Exception):
    """Triton's answer could not be read (a cut connection, a malformed response)."""


def _bytes_elements(arr: np.ndarray) -> bytes:
    parts = []
    for v in arr.reshape(-1).tolist():
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def encode_request(tensors: Sequence[tuple[Tensor, np.ndarray]], outputs: Sequence[str]) -> tuple[bytes, int]:
    """The body of a binary infer request and its JSON header's length."""
    inputs, blobs = [], []
    for tensor, arr in tensors:
        blob = _bytes_elements(arr) if tensor.wire_type == "BYTES" else \
            np.ascontiguousarray(arr, dtype=WIRE_DTYPES[tensor.wire_type]).tobytes()
        inputs.append({"name": tensor.name, "shape": list(arr.shape), "datatype": tensor.wire_type,
                       "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    doc: dict[str, Any] = {"inputs": inputs}
    if outputs:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    else:
        doc["parameters"] = {"binary_data_output": True}
    header = _encoder.encode(doc)
    return b"".join([header, *blobs]), len(header)


def decode_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """The outputs of an infer response (binary or JSON data) by name."""
    length = header_length if header_length is not None else len(body)
    doc = _decoder.decode(body[:length])
    offset = length
    out = {}
    for o in doc.get("outputs") or ():
        shape = [int(d) for d in o.get("shape") or ()]
        datatype = o.get("datatype")
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = body[offset:offset + size]
            offset += size
            if datatype == "BYTES":
                arr = _read_bytes(chunk)
            else:
                arr = np.frombuffer(chunk, dtype=WIRE_DTYPES[datatype]).copy()
        else:
            data = o.get("data") or []
            arr = np.array([v.encode("utf-8") if isinstance(v, str) else v for v in data], dtype=object) \
                if datatype == "BYTES" else np.asarray(data, dtype=WIRE_DTYPES[datatype])
        out[o["name"]] = arr.reshape(shape)
    return out


def _read_bytes(chunk: bytes) -> np.ndarray:
    items, offset = [], 0
    while offset < len(chunk):
        (size,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        items.append(chunk[offset:offset + size])
        offset += size
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


class Connection:
    """One keep-alive HTTP/1.1 connection to Triton (not thread-safe: one per thread)."""

    def __init__(self, host: str, port: int, timeout: float, *, tls: bool = False) -> None:
        self.host, self.port, self.timeout, self.tls = host, port, timeout, tls
        self.sock: socket.socket | None = None
        self._buffer = b""

    def open(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            import ssl

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self.sock, self._buffer = sock, b""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def post(self, path: str, body: bytes, header_length: int | None) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send one POST and read its answer: status, headers (lower-case names) and body. Raises OSError when
        the connection fails, ProtocolError when the answer cannot be read."""
        if self.sock is None:
            self.open()
        head = [f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"]
        if header_length:
            head.append(f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {header_length}\r\n")
        else:
            head.append("Content-Type: application/json\r\n")
        head.append("\r\n")
        assert self.sock is not None
        self.sock.sendall("".join(head).encode("latin-1") + body)
        return self._read()

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("Triton closed the connection")
        self._buffer += chunk

    def _read(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise ProtocolError(f"not an HTTP status line: {lines[0][:100]!r}") from None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" not in headers:
            raise ProtocolError("Triton's answer has no Content-Length")
        size = int(headers[b"content-length"])
        self._buffer = rest
        while len(self._buffer) < size:
            self._fill()
        body, self._buffer = self._buffer[:size], self._buffer[size:]
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, headers, body
