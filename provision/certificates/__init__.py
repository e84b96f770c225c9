"""Certificates of erasure and preparation (HTML, PDF, signed JSON), their offline verification, batch
certificates per donor delivery, and printable labels with QR codes (docs/certificates.md)."""
