"""`provision certificate show|batch|key|verify` and `provision labels`: certificates of erasure (signed JSON,
HTML, PDF; docs/certificates.md), their offline verification, and printable labels.

``show`` and ``batch`` issue a new certificate each time (a new id, signed by the server's key, a ``certificate``
event on each machine). With ``--format html|pdf --out FILE`` the signed JSON of the same certificate is written
beside it (``FILE`` with ``.json``): the paper and the file a donor verifies carry the same id.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from provision.cli.common import DEFAULT_STATE, UsageError, state_dir_of

FORMATS = ("json", "html", "pdf")


def _settings(args: argparse.Namespace) -> tuple[Path, Path, str]:
    """(state directory, signing key, workshop name) from --state-dir or --config."""
    from provision.config import load_config

    if args.config:
        config = load_config(Path(args.config))
        return config.state_dir, config.certificates_key_path, config.certificates.workshop
    state = state_dir_of(args)
    defaults = load_config(None, {"state_dir": str(state)})
    return state, defaults.certificates_key_path, defaults.certificates.workshop


def _open_store(state: Path) -> Any:
    from provision.errors import FatalError
    from provision.store import Store

    db = state / "provision.db"
    if not db.is_file():
        raise FatalError(f"no server database at {db} (has provision serve run with this state directory?)")
    return Store(db)


def _mac(text: str) -> str:
    from provision.macaddr import BadMac, normalize_mac

    try:
        return normalize_mac(text)
    except BadMac as exc:
        raise UsageError(str(exc)) from None


def _issue(args: argparse.Namespace, out: TextIO, *, lot: str | None) -> int:
    from provision.certificates.gather import gather, gather_lot, record_issued
    from provision.certificates.model import Certificate
    from provision.certificates.render import batch_html, certificate_html, pdf
    from provision.certificates.signing import document_bytes, load_or_create_key, sign

    if args.format == "pdf" and not args.out:
        raise UsageError("--format pdf needs --out FILE")
    beside = _json_beside(args.out) if args.out and args.format != "json" else None
    state, key_path, workshop = _settings(args)
    key = load_or_create_key(key_path)
    with _open_store(state) as store:
        if lot is None:
            found: Any = gather(store, _mac(args.mac), run=args.run, workshop=workshop)
        else:
            found = gather_lot(store, lot, workshop=workshop)
        record_issued(store, found, key.public.fingerprint)
    signed = document_bytes(sign(found, key))
    if args.format == "json":
        return _write(out, args.out, signed)
    fingerprint = key.public.fingerprint
    if isinstance(found, Certificate):
        html = certificate_html(found, lang=args.lang, fingerprint=fingerprint)
    else:
        html = batch_html(found, lang=args.lang, fingerprint=fingerprint)
    if beside is not None:
        beside.write_bytes(signed)
    return _write(out, args.out, pdf(html) if args.format == "pdf" else html.encode())


def _json_beside(out: str) -> Path:
    """Where the signed JSON goes beside an HTML or PDF ``out`` (its suffix replaced by ``.json``); a usage
    error when that is ``out`` itself (``--out cert.json --format pdf``: the PDF would overwrite the JSON)."""
    page = Path(out)
    beside = page.with_suffix(".json")
    if beside.absolute() == page.absolute():
        raise UsageError(f"--out {out}: the signed JSON is written beside the page as {beside}, which is the --out "
                         "file itself; give the page its own name (e.g. --out cert.pdf)")  # fmt: skip
    return beside


def _write(out: TextIO, path: str | None, data: bytes) -> int:
    if path:
        Path(path).write_bytes(data)
        out.write(f"{path}\n")
    else:
        out.write(data.decode())
    return 0


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    return _issue(args, out, lot=None)


def cmd_batch(args: argparse.Namespace, out: TextIO) -> int:
    return _issue(args, out, lot=args.lot)


def cmd_key(args: argparse.Namespace, out: TextIO) -> int:
    from provision.certificates.signing import load_or_create_key

    _state, key_path, _workshop = _settings(args)
    public = load_or_create_key(key_path).public
    if args.line:
        out.write(f"{public.line()}\n")
        return 0
    out.write(f"# provision certificates: the workshop's public key, fingerprint {public.fingerprint}\n")
    out.write(f"# one line: {public.line()}\n")
    out.write(public.pem())
    return 0


def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    from provision.certificates.errors import KeyFileError
    from provision.certificates.model import Certificate
    from provision.certificates.signing import load_key, load_public_key, verify_bytes

    if args.key:
        try:
            text = Path(args.key).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read the public key {args.key}: {exc}", path=args.key) from exc
        public = load_public_key(text, where=args.key)
    else:
        _state, key_path, _workshop = _settings(args)
        public = load_key(key_path).public
    data = Path(args.file).read_bytes()
    verified = verify_bytes(data, public)
    found = verified.certificate
    if isinstance(found, Certificate):
        what = f"certificate {found.id} for {found.machine.mac}, {len(found.drives)} drives"
    else:
        machines = f"{len(found.machines)} machines"
        what = f"batch certificate {found.id} for lot {found.lot}, {machines}, {len(found.drives)} drives"
    out.write(f"valid: {what}, signed by {verified.fingerprint}\n")
    return 0


def cmd_labels(args: argparse.Namespace, out: TextIO) -> int:
    from provision.certificates.gather import lot_macs
    from provision.certificates.labels import A4_3X8, labels_html, labels_of
    from provision.certificates.render import pdf

    if bool(args.macs) == bool(args.lot):
        raise UsageError("give MAC addresses or --lot LOT")
    state, _key, _workshop = _settings(args)
    with _open_store(state) as store:
        macs = lot_macs(store, args.lot) if args.lot else [_mac(m) for m in args.macs]
        if not macs:
            raise UsageError(f"no machine in lot {args.lot!r}")
        labels = labels_of(store, macs)
    html = labels_html(labels, lang=args.lang, sheet=None if args.single else A4_3X8)
    return _write(out, args.out, pdf(html))


def _common(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state-dir", metavar="DIR", help=f"the server's state directory (default: {DEFAULT_STATE})")
    where.add_argument("--config", metavar="FILE", help="the server's YAML configuration (state_dir, certificates)")


def _document(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", choices=("fr", "en"), default="fr", help="the language of HTML and PDF (default fr)")
    p.add_argument("--format", choices=FORMATS, default="json", help="signed JSON (default), HTML or PDF")
    p.add_argument("--out", metavar="FILE", help="write FILE (and, for html or pdf, the signed JSON as FILE.json)")
    _common(p)


def add_commands(sub: Any) -> None:
    group = sub.add_parser("certificate", help="certificates of erasure: show, batch, key, verify")
    commands = group.add_subparsers(dest="certificate_command", metavar="COMMAND", required=True)
    p = commands.add_parser("show", help="issue a machine's certificate (its last run with erasure or imaging)")
    p.add_argument("mac", metavar="MAC")
    p.add_argument("--run", metavar="RUN", help="the run to certify (default: the last with erasure or imaging)")
    _document(p)
    p.set_defaults(func=cmd_show)
    p = commands.add_parser("batch", help="issue a lot's certificate: every drive of a donor's delivery")
    p.add_argument("lot", metavar="LOT")
    _document(p)
    p.set_defaults(func=cmd_batch)
    p = commands.add_parser("key", help="print the public key to give donors (PEM, one base64 line, fingerprint)")
    p.add_argument("--line", action="store_true", help="only the one-line base64 form")
    _common(p)
    p.set_defaults(func=cmd_key)
    p = commands.add_parser("verify", help="verify a signed certificate file offline")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--key", metavar="PUBFILE", help="the workshop's public key (default: this server's own key)")
    _common(p)
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("labels", help="printable labels (QR code of the asset id, short spec) as a PDF")
    p.add_argument("macs", metavar="MAC", nargs="*")
    p.add_argument("--lot", metavar="LOT", help="every machine of a lot")
    p.add_argument("--single", action="store_true", help="one 70 x 37 mm label per page (default: A4 sheets 3 x 8)")
    p.add_argument("--lang", choices=("fr", "en"), default="fr")
    p.add_argument("--out", metavar="FILE", default="labels.pdf", help="the PDF to write (default labels.pdf)")
    _common(p)
    p.set_defaults(func=cmd_labels)
