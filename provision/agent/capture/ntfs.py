"""Free clusters of an NTFS volume, from its ``$Bitmap`` (the layout ntfs-3g's headers, layout.h, and the Linux
ntfs driver's docs describe: boot sector, MFT records with their update sequence, attributes, run lists).

- The boot sector: bytes per sector (0x0B), sectors per cluster (0x0D; above 0x80 it is 2^(256 - value)), total
  sectors (0x28: the backup boot sector after them is outside), the MFT's first cluster (0x30) and the MFT record
  size (0x40: clusters, or 2^-value bytes when negative). Clusters = total sectors / sectors per cluster.
- MFT records: magic ``FILE``, the update sequence array (offset 0x04, count 0x06) whose number must end every
  512-byte stride and is replaced by the saved bytes (the fixups: a stride that does not match is a torn write),
  flags (0x16: in use), attributes from 0x14 (type, length; 0xFFFFFFFF ends them). Record 0 ($MFT) is read at the
  MFT's first cluster and its unnamed ``$DATA`` run list maps the other records.
- Run lists: a header byte (low nibble: bytes of the length; high nibble: bytes of the signed LCN delta; 0: a
  sparse run), the list ended by a zero byte.
- Record 3 ($Volume): ``$VOLUME_INFORMATION`` (0x70) flags, 0x0001 = dirty; ``$VOLUME_NAME`` (0x60) the label.
- Record 2 ($LogFile): the restart page (``RSTR``, fixed up) with the highest current LSN of the two: its restart
  area must say no client is in use (``client_in_use_list`` 0xFFFF) or ``RESTART_VOLUME_IS_CLEAN`` (0x0002), as
  ntfs-3g's ``ntfs_is_logfile_clean`` asks; a log of 0xFF bytes is empty (clean). An unclean log (a Windows that
  crashed, or hibernated by fast startup) may allocate what the bitmap says is free.
- Record 6 ($Bitmap): its unnamed non-resident (or resident) ``$DATA``, bit ``i`` (LSB first) set = cluster ``i``
  in use; bits past the volume's clusters are ignored (those clusters stay data).

Any problem (a magic, a fixup, a run outside the volume, a sparse, compressed or encrypted bitmap, one split
across MFT records by an attribute list, a bitmap shorter than the clusters) is a ``FsProblem``: nothing free.
The bitmap is otherwise trusted as the file system trusts it.
"""

from __future__ import annotations

import struct

from provision.agent.capture.common import Found, Range, Volume, clear_bit_runs

ATTR_LIST, VOLUME_NAME, VOLUME_INFO, DATA, END = 0x20, 0x60, 0x70, 0x80, 0xFFFFFFFF
MFT, LOGFILE, VOLUME, BITMAP = 0, 2, 3, 6
PIECE = 4 << 20  # bitmap bytes read at once
LOG_SCAN = 128 << 10  # $LogFile bytes looked at for its restart pages
PAGE_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
Run = tuple[int, int | None, int]  # (first VCN, LCN or None when sparse, clusters)


class _Attr:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.type, _, self.non_resident, name_length = struct.unpack_from("<IIBB", raw, 0)
        self.named, self.flags = name_length > 0, struct.unpack_from("<H", raw, 0xC)[0]

    def value(self) -> bytes:
        length, at = struct.unpack_from("<IH", self.raw, 0x10)
        return self.raw[at : at + length]


class _Ntfs:
    def __init__(self, vol: Volume) -> None:
        self.vol = vol
        boot = vol.read(0, 512, "boot sector")
        if boot[510:512] != b"\x55\xaa":
            raise vol.problem("boot sector without the 0x55AA signature")
        bps, spc_raw = struct.unpack_from("<HB", boot, 0x0B)
        total, self.mft_lcn = struct.unpack_from("<QQ", boot, 0x28)
        per_record = struct.unpack_from("<b", boot, 0x40)[0]
        if bps < 256 or bps > 4096 or bps & (bps - 1):
            raise vol.problem(f"{bps} bytes per sector")
        spc = 1 << (256 - spc_raw) if spc_raw > 0x80 else spc_raw
        if spc == 0 or spc & (spc - 1) or bps * spc > 2 << 20:
            raise vol.problem(f"sectors per cluster byte 0x{spc_raw:02x}")
        self.cluster = vol.block_size = bps * spc
        self.record = 1 << -per_record if per_record < 0 else per_record * self.cluster
        if not 512 <= self.record <= 65536 or self.record & (self.record - 1):
            raise vol.problem(f"MFT record size {self.record} (byte 0x40: {per_record})")
        if total * bps > vol.size:
            raise vol.problem(f"{total} sectors of {bps} bytes do not fit the partition ({vol.size} bytes)")
        self.clusters = total // spc
        if not 0 < self.mft_lcn < self.clusters:
            raise vol.problem(f"MFT at cluster {self.mft_lcn}, outside the volume's {self.clusters} clusters")
        rec0 = self.fixed(vol.read(self.mft_lcn * self.cluster, self.record, "MFT record 0"), "MFT record 0")
        self.mft_runs = self.runs(self.data(rec0, "$MFT", first_extent=True), "$MFT")  # records 0-15 at least

    def fixed(self, raw: bytes, what: str, magic: bytes = b"FILE") -> bytearray:
        """The record with its update sequence applied (every 512-byte stride checked)."""
        rec = bytearray(raw)
        if rec[:4] != magic:
            raise self.vol.problem(f"{what}: magic {bytes(rec[:4])!r}, not {magic!r}")
        usa, count = struct.unpack_from("<HH", rec, 4)
        if count - 1 != len(rec) // 512 or usa & 1 or usa + 2 * count > 512:
            raise self.vol.problem(f"{what}: update sequence of {count} at {usa} for {len(rec)} bytes")
        for i in range(1, count):
            end = i * 512 - 2
            if rec[end : end + 2] != rec[usa : usa + 2]:
                raise self.vol.problem(f"{what}: update sequence mismatch in stride {i} (a torn write)")
            rec[end : end + 2] = rec[usa + 2 * i : usa + 2 * i + 2]
        return rec

    def mft_record(self, number: int, what: str) -> bytearray:
        rec = self.fixed(self.stream(self.mft_runs, number * self.record, self.record, what), what)
        if not struct.unpack_from("<H", rec, 0x16)[0] & 1:
            raise self.vol.problem(f"{what}: record not in use")
        return rec

    def attrs(self, rec: bytearray, what: str) -> list[_Attr]:
        at, used = struct.unpack_from("<H", rec, 0x14)[0], struct.unpack_from("<I", rec, 0x18)[0]
        found: list[_Attr] = []
        while True:
            if at + 8 > min(used, len(rec)):
                raise self.vol.problem(f"{what}: attributes run past the record's {used} bytes in use")
            kind, length = struct.unpack_from("<II", rec, at)
            if kind == END:
                return found
            if length < 24 or length % 8 or at + length > used:
                raise self.vol.problem(f"{what}: attribute 0x{kind:x} at {at} of length {length}")
            found.append(_Attr(bytes(rec[at : at + length])))
            at += length

    def data(self, rec: bytearray, what: str, *, first_extent: bool = False) -> _Attr:
        """The record's unnamed ``$DATA`` attribute: whole in the record (or, with ``first_extent``, its extent
        from VCN 0 when an attribute list spreads it over records), not compressed, encrypted or sparse."""
        attrs = self.attrs(rec, what)
        datas = [a for a in attrs if a.type == DATA and not a.named]
        if first_extent:
            datas = [a for a in datas if not a.non_resident or struct.unpack_from("<Q", a.raw, 0x10)[0] == 0]
        elif any(a.type == ATTR_LIST for a in attrs):
            datas = []
        if len(datas) != 1:
            raise self.vol.problem(f"{what}: $DATA split across records (an attribute list) or missing")
        if datas[0].flags & 0xC0FF:
            raise self.vol.problem(f"{what}: $DATA compressed, encrypted or sparse (flags 0x{datas[0].flags:04x})")
        return datas[0]

    def runs(self, attr: _Attr, what: str) -> list[Run]:
        """The run list of a non-resident attribute, every run inside the volume."""
        if not attr.non_resident:
            raise self.vol.problem(f"{what}: $DATA resident, a run list was expected")
        raw = attr.raw
        low, high, mapping = struct.unpack_from("<QQH", raw, 0x10)
        pos, vcn, lcn, runs = mapping, low, 0, []
        while pos < len(raw) and raw[pos]:
            sizes, pos = raw[pos], pos + 1
            nlen, noff = sizes & 0xF, sizes >> 4
            if not 0 < nlen <= 8 or noff > 8 or pos + nlen + noff > len(raw):
                raise self.vol.problem(f"{what}: run list header 0x{sizes:02x} at byte {pos - 1}")
            count = int.from_bytes(raw[pos : pos + nlen], "little")
            if noff:
                lcn += int.from_bytes(raw[pos + nlen : pos + nlen + noff], "little", signed=True)
                if not (count and lcn >= 0 and lcn + count <= self.clusters):
                    raise self.vol.problem(f"{what}: run of {count} clusters at {lcn}, outside the volume")
            runs.append((vcn, lcn if noff else None, count))
            vcn, pos = vcn + count, pos + nlen + noff
        if low != 0 or vcn != high + 1:
            raise self.vol.problem(f"{what}: runs cover VCN {low}-{vcn - 1}, the attribute says {low}-{high}")
        return runs

    def stream(self, runs: list[Run], at: int, length: int, what: str) -> bytes:
        """``length`` bytes at byte ``at`` of a non-resident stream (no sparse run may be touched)."""
        out = bytearray()
        for vcn, lcn, count in runs:
            start, end = vcn * self.cluster, (vcn + count) * self.cluster
            if end <= at or start >= at + length:
                continue
            if lcn is None:
                raise self.vol.problem(f"{what}: bytes {at}-{at + length} fall in a sparse run")
            lo, hi = max(at, start), min(at + length, end)
            out += self.vol.read(lcn * self.cluster + lo - start, hi - lo, what)
        if len(out) != length:
            raise self.vol.problem(f"{what}: only {len(out)} of {length} bytes at {at} are mapped")
        return bytes(out)


def read_ntfs(vol: Volume) -> Found:
    """The free clusters of the NTFS volume of ``vol`` (absolute disk ranges), or ``FsProblem``."""
    ntfs = _Ntfs(vol)
    _check_volume(ntfs)
    _check_log(ntfs)
    rec = ntfs.mft_record(BITMAP, "$Bitmap (MFT record 6)")
    attr = ntfs.data(rec, "$Bitmap")
    need = -(-ntfs.clusters // 8)
    free: list[Range] = []

    def add(piece: bytes, first_bit: int) -> None:
        for at, n in clear_bit_runs(piece, min(len(piece) * 8, ntfs.clusters - first_bit)):
            start = (first_bit + at) * ntfs.cluster + vol.offset
            if free and sum(free[-1]) == start:
                free[-1] = (free[-1][0], free[-1][1] + n * ntfs.cluster)
            else:
                free.append((start, n * ntfs.cluster))

    if not attr.non_resident:
        value = attr.value()
        if len(value) < need:
            raise vol.problem(f"$Bitmap: {len(value)} bytes resident, {need} needed for {ntfs.clusters} clusters")
        add(value, 0)
    else:
        size, initialized = struct.unpack_from("<QQ", attr.raw, 0x30)
        if min(size, initialized) < need:
            raise vol.problem(f"$Bitmap: {size} bytes ({initialized} initialized), {need} needed")
        runs = ntfs.runs(attr, "$Bitmap")
        for at in range(0, need, PIECE):
            add(ntfs.stream(runs, at, min(PIECE, need - at), "$Bitmap"), at * 8)
    return Found("ntfs", ntfs.cluster, free, vol.label)


def _check_volume(ntfs: _Ntfs) -> None:
    """$Volume: its label, and not dirty."""
    attrs = ntfs.attrs(ntfs.mft_record(VOLUME, "$Volume (MFT record 3)"), "$Volume")
    for attr in attrs:
        if attr.type == VOLUME_NAME and not attr.non_resident:
            ntfs.vol.label = attr.value().decode("utf-16-le", "replace") or None
    info = [a.value() for a in attrs if a.type == VOLUME_INFO and not a.non_resident]
    if len(info) != 1 or len(info[0]) < 12:
        raise ntfs.vol.problem("$Volume: no $VOLUME_INFORMATION")
    flags = struct.unpack_from("<H", info[0], 10)[0]
    if flags & 0x0001:
        raise ntfs.vol.problem(f"the volume is marked dirty ($Volume flags 0x{flags:04x}): run chkdsk")


def _check_log(ntfs: _Ntfs) -> None:
    """$LogFile: empty (0xFF), or the restart area of its newer restart page clean. Restart pages are looked
    for at bytes 0, 512, 1024, 2048 ... as the Linux driver's ``ntfs_check_logfile`` does; ``CHKD`` (chkdsk
    was interrupted) is not clean."""
    attr = ntfs.data(ntfs.mft_record(LOGFILE, "$LogFile (MFT record 2)"), "$LogFile")
    size = struct.unpack_from("<Q", attr.raw, 0x30)[0]
    if size < 4096:
        raise ntfs.vol.problem(f"$LogFile of {size} bytes")
    head = ntfs.stream(ntfs.runs(attr, "$LogFile"), 0, min(size, LOG_SCAN), "$LogFile")
    newest: tuple[int, int, int] | None = None  # (current LSN, client_in_use_list, flags)
    empty, pos = True, 0
    while pos + 512 <= len(head):
        magic = head[pos : pos + 4]
        empty = empty and magic == b"\xff\xff\xff\xff"
        if magic == b"CHKD":
            raise ntfs.vol.problem(f"$LogFile: chkdsk was interrupted (CHKD page at byte {pos}): run chkdsk")
        if magic == b"RSTR":
            page = struct.unpack_from("<I", head, pos + 0x10)[0]
            if page not in PAGE_SIZES or pos + page > len(head):
                raise ntfs.vol.problem(f"$LogFile: restart page at byte {pos} of {page} bytes")
            rec = ntfs.fixed(head[pos : pos + page], f"$LogFile restart page at byte {pos}", b"RSTR")
            area = struct.unpack_from("<H", rec, 0x18)[0]
            if area + 16 > page:
                raise ntfs.vol.problem(f"$LogFile: restart area at {area} of a {page}-byte page")
            lsn, in_use, flags = struct.unpack_from("<Q4xHH", rec, area)
            if newest is None or lsn > newest[0]:
                newest = (lsn, in_use, flags)
        pos = pos * 2 if pos else 512
    if newest is None and not empty:
        raise ntfs.vol.problem(f"$LogFile: no restart page (magic {head[:4]!r})")
    if newest is not None and newest[1] != 0xFFFF and not newest[2] & 0x0002:
        raise ntfs.vol.problem("$LogFile: not clean (Windows crashed or hibernated, fast startup?): run chkdsk")
