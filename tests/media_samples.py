"""Small, real-format samples for voice, audio, PDF and text tests (made here, never downloaded).

* `ogg_opus(seconds)`: an Ogg Opus stream with the two header pages and audio pages whose last
  granule position gives the duration (48 kHz), as Telegram voice notes are.
* `ogg_not_audio()`: a well-formed Ogg container that carries no audio codec (a Skeleton-like
  stream), the "OGG that is not audio" case.
* `pdf(pages)`, `encrypted_pdf()`, `nested_pdf_bomb()`, `page_count_bomb()`: made with pypdf or
  by hand.
"""

from __future__ import annotations

import io
import struct

_OGG_CRC_TABLE: list[int] = []
for _i in range(256):
    _r = _i << 24
    for _ in range(8):
        _r = ((_r << 1) ^ 0x04C11DB7) if _r & 0x80000000 else (_r << 1)
    _OGG_CRC_TABLE.append(_r & 0xFFFFFFFF)


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC_TABLE[((crc >> 24) & 0xFF) ^ byte]
    return crc


def ogg_page(payload: bytes, *, granule: int, serial: int, sequence: int, flags: int = 0) -> bytes:
    segments = []
    remaining = len(payload)
    while remaining >= 255:
        segments.append(255)
        remaining -= 255
    segments.append(remaining)
    header = (
        b"OggS"
        + bytes([0, flags])
        + struct.pack("<qII", granule, serial, sequence)
        + b"\0\0\0\0"
        + bytes([len(segments)])
        + bytes(segments)
    )
    crc = _ogg_crc(header + payload)
    return header[:22] + struct.pack("<I", crc) + header[26:] + payload


def ogg_opus(seconds: float, *, frame_bytes: int = 60, padding: int = 0) -> bytes:
    """An Ogg Opus stream of `seconds` (20 ms frames); `padding` adds bytes of filler pages."""
    serial = 0x5EED
    head = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", 312, 48000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 4) + b"fake" + struct.pack("<I", 0)
    out = io.BytesIO()
    out.write(ogg_page(head, granule=0, serial=serial, sequence=0, flags=2))
    out.write(ogg_page(tags, granule=0, serial=serial, sequence=1))
    frames = max(1, int(seconds * 50))
    sequence = 2
    per_page = 50
    written = 0
    filler = padding
    while written < frames:
        count = min(per_page, frames - written)
        written += count
        chunk = bytes([0xFC]) * (frame_bytes * count)
        if filler > 0:
            extra = min(filler, 60000)
            chunk += bytes(extra)
            filler -= extra
        flags = 4 if written >= frames and filler <= 0 else 0
        out.write(
            ogg_page(
                chunk, granule=312 + written * 960, serial=serial, sequence=sequence, flags=flags
            )
        )
        sequence += 1
        while filler > 0 and written >= frames:
            extra = min(filler, 60000)
            filler -= extra
            out.write(
                ogg_page(
                    bytes(extra),
                    granule=312 + written * 960,
                    serial=serial,
                    sequence=sequence,
                    flags=4 if filler <= 0 else 0,
                )
            )
            sequence += 1
    return out.getvalue()


def ogg_not_audio() -> bytes:
    """A valid Ogg page whose stream is no audio codec (Ogg Skeleton's fishead)."""
    payload = b"fishead\0" + bytes(56)
    return ogg_page(payload, granule=0, serial=7, sequence=0, flags=2 | 4)


def pdf(pages: int = 1, text: str = "Hello PDF") -> bytes:
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, NameObject

    writer = PdfWriter()
    for n in range(pages):
        page = writer.add_blank_page(width=612, height=792)
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 72 720 Td ({text} {n + 1}) Tj ET".encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted_pdf(password: str = "secret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf(2))))
    writer.encrypt(user_password=password, owner_password=password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _hand_pdf(objects: list[bytes]) -> bytes:
    """A PDF from raw object bodies (object n is objects[n-1]) with a correct xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def nested_pdf_bomb(depth: int = 100_000) -> bytes:
    """A page whose resources hold an array nested `depth` deep."""
    nested = b"[" * depth + b"]" * depth
    return _hand_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /X "
            + nested
            + b" >> >>",
        ]
    )


def page_count_bomb(count: int = 10_000_000) -> bytes:
    """A page tree that claims `count` pages (and repeats one kid)."""
    return _hand_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [" + b"3 0 R " * 2000 + b"] /Count %d >>" % count,
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        ]
    )


def zero_page_pdf() -> bytes:
    return _hand_pdf(
        [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    )


def slow_pdf(objects: int = 35_000) -> bytes:
    """A one-page PDF whose resources name `objects` small objects: within the checker's limits,
    but a second or more of CPU to walk (a stand-in for a bomb that runs to the deadline)."""
    refs = b" ".join(b"%d 0 R" % (n + 4) for n in range(objects))
    return _hand_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /X ["
            + refs
            + b"] >> >>",
            *[b"<< /A [1 2 3] /B << /C 1 >> >>"] * objects,
        ]
    )
