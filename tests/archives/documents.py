"""Documents the archive tests and the benchmark build themselves: PDFs written by hand (a
catalog, a page tree, Helvetica, one content stream per page), encrypted ones through pypdf's own
writer, and damaged ones."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pypdf


def _pdf_string(line: str) -> bytes:
    raw = line.encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def pdf_bytes(pages: Sequence[Sequence[str]]) -> bytes:
    """A PDF whose page i shows the lines of `pages[i]`, top to bottom (empty pages allowed)."""
    bodies: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, once the pages' numbers are known
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    kids = []
    for index, lines in enumerate(pages):
        page_number, content_number = 4 + 2 * index, 5 + 2 * index
        kids.append(f"{page_number} 0 R".encode())
        bodies.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents "
            + f"{content_number} 0 R".encode()
            + b" >>"
        )
        stream = (
            b"BT /F1 10 Tf 12 TL 50 760 Td "
            + b" ".join(_pdf_string(line) + b" Tj T*" for line in lines)
            + b" ET"
        )
        bodies.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    bodies[1] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + f"] /Count {len(pages)} >>".encode()
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(bodies, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(bodies) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(bodies) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


def encrypted_pdf(pages: Sequence[Sequence[str]], *, user_password: str = "secret") -> bytes:
    """The same PDF encrypted by pypdf (AES-256). An empty `user_password` makes a PDF that
    restricts only its owner's rights and opens without asking, like many "protected" PDFs."""
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf_bytes(pages))))
    writer.encrypt(user_password=user_password, owner_password="owner-pw", algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def corrupt_pdf() -> bytes:
    """A PDF header and then garbage: no objects, no cross-reference table."""
    return b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def truncated_pdf(pages: Sequence[Sequence[str]]) -> bytes:
    """A real PDF cut off in the middle of its content (a broken download)."""
    data = pdf_bytes(pages)
    return data[: len(data) // 2]


FACT = "The Zorbanian capital, Quellport, was founded in 1742 by river traders."


def textbook(pages: int = 12, fact_page: int = 7) -> bytes:
    """A PDF of ordinary geography with one fact (FACT) found on `fact_page` only."""
    filler = [f"Page {{}} covers ordinary geography, line {i}." for i in range(8)]
    return pdf_bytes(
        [
            [line.format(n) for line in filler] + ([FACT] if n == fact_page else [])
            for n in range(1, pages + 1)
        ]
    )
