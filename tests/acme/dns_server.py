"""A small DNS server for tests (dnspython over UDP on 127.0.0.1): A 127.0.0.1 for every name
under its zone, and the TXT records a test puts in `txt`. It stops with its context."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@dataclass
class FakeDNS:
    zone: str
    port: int = 0
    txt: dict[str, list[str]] = field(default_factory=dict)
    txt_dir: Path | None = None  # files named after the name (e.g. by lego's exec provider)

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        if not (name == self.zone or name.endswith("." + self.zone)):
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            response.answer.append(
                dns.rrset.from_text(question.name, 5, dns.rdataclass.IN, "A", "127.0.0.1")
            )
        elif question.rdtype == dns.rdatatype.TXT and self.txt_values(name):
            values = [f'"{value}"' for value in self.txt_values(name)]
            response.answer.append(
                dns.rrset.from_text(question.name, 5, dns.rdataclass.IN, "TXT", *values)
            )
        return bytes(response.to_wire())

    def txt_values(self, name: str) -> list[str]:
        values = list(self.txt.get(name, []))
        if self.txt_dir is not None and (self.txt_dir / name).is_file():
            values.append((self.txt_dir / name).read_text().strip())
        return values


@contextmanager
def running_dns(zone: str) -> Iterator[FakeDNS]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    server = FakeDNS(zone, sock.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            try:
                sock.sendto(server.answer(wire), peer)
            except Exception:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()
