"""Free blocks of an ext2/3/4 file system, from its block bitmaps (the kernel's ext4 on-disk format, as
Documentation/filesystems/ext4/ "The Super Block", "Block Group Descriptors" and "Block and inode Bitmaps" and
fs/ext4/balloc.c describe it).

- The superblock (1024 bytes at byte 1024): ``s_blocks_count`` (``_hi`` with the 64bit feature),
  ``s_first_data_block`` (1 with 1 KiB blocks: block 0 is before every group and stays used),
  ``s_blocks_per_group``, ``s_inodes_per_group``, ``s_desc_size``, ``s_reserved_gdt_blocks``, ``s_first_meta_bg``,
  ``s_backup_bgs`` (sparse_super2); its crc32c when metadata_csum is on.
- Group descriptors (32 bytes, or ``s_desc_size`` >= 64 with the 64bit feature: the ``_hi`` halves), in the
  blocks after the superblock, or with meta_bg in the first block of each meta group from ``s_first_meta_bg`` on
  (the kernel's ``descriptor_loc``); each checked by its ``bg_checksum`` (crc32c with metadata_csum, crc16 with
  uninit_bg/gdt_csum).
- Each group's block bitmap, wherever flex_bg put it (the descriptor's ``bg_block_bitmap``), checked by
  ``bg_block_bitmap_csum`` with metadata_csum; bit ``i`` clear = block ``group start + i`` free.
- A group flagged ``BLOCK_UNINIT`` (honoured only with a group descriptor checksum, as the kernel does) has no
  bitmap on disk: it is computed as the kernel's ``ext4_init_block_bitmap`` does (superblock and descriptor
  backups with the reserved descriptor blocks, then the group's own bitmaps and inode table when inside it).

Checks, each a ``FsProblem`` (nothing free) rather than a guess: a journal that needs recovery (its blocks may
allocate what the bitmaps say is free), a file system not marked clean or marked with errors, an external
journal device, bigalloc (clusters are not read), counts that do not add up (inodes per group x groups, a group's
free count against its bitmap), a checksum that does not match, a bitmap outside the file system, a file system
larger than its partition, and any metadata block (superblock or descriptor copies, bitmaps, inode tables of
every group) that a bitmap marks free. Blocks of the partition past ``s_blocks_count`` are not the file system's
and are left as data. A bitmap is otherwise trusted as the file system itself trusts it: a used data block
marked free (with its count adjusted) cannot be told from a free one, by us or by the kernel.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import partial

from provision.agent.capture import common
from provision.agent.capture.common import Found, Range, Volume, clear_bit_runs, crc16, crc32c
from provision.agent.ranges import merge
from provision.wire.capture import FsKind

MAGIC = 0xEF53
COMPAT_JOURNAL, COMPAT_SPARSE_SUPER2 = 0x4, 0x200
INCOMPAT_RECOVER, INCOMPAT_JOURNAL_DEV, INCOMPAT_META_BG = 0x4, 0x8, 0x10
INCOMPAT_64BIT, INCOMPAT_CSUM_SEED, INCOMPAT_EXT4 = 0x80, 0x2000, 0x2C0  # 0x2C0: extents, 64bit, flex_bg
RO_SPARSE_SUPER, RO_GDT_CSUM, RO_BIGALLOC, RO_METADATA_CSUM = 0x1, 0x10, 0x200, 0x400
BG_BLOCK_UNINIT = 0x2
STATE_VALID, STATE_ERROR = 0x1, 0x2


def kind_of(sb: bytes) -> FsKind:
    compat, incompat = struct.unpack_from("<II", sb, 0x5C)
    return "ext4" if incompat & INCOMPAT_EXT4 else "ext3" if compat & COMPAT_JOURNAL else "ext2"


class _Ext:
    """The superblock's facts and the geometry derived from them (names as in the kernel)."""

    def __init__(self, vol: Volume, sb: bytes) -> None:
        self.vol = vol
        u32: Callable[[int], int] = partial(common.u32, sb)
        u16: Callable[[int], int] = partial(common.u16, sb)
        self.compat, self.incompat, self.ro_compat = u32(0x5C), u32(0x60), u32(0x64)
        log_size = u32(0x18)
        if log_size > 6:
            raise vol.problem(f"superblock: s_log_block_size {log_size} (blocks of at most 64 KiB exist)")
        self.bs = vol.block_size = 1024 << log_size
        self.bit64 = bool(self.incompat & INCOMPAT_64BIT)
        self.blocks = u32(0x4) | (u32(0x150) << 32 if self.bit64 else 0)
        self.first_data, self.per_group, self.inodes_per_group = u32(0x14), u32(0x20), u32(0x28)
        self.inodes, self.state, self.rev = u32(0x0), u16(0x3A), u32(0x4C)
        self.inode_size = u16(0x58) if self.rev else 128
        self.reserved_gdt, self.first_meta_bg = u16(0xCE), u32(0x104)
        self.backup_bgs = (u32(0x24C), u32(0x250))
        self.uuid = sb[0x68:0x78]
        self.desc_size = u16(0xFE) if self.bit64 else 32
        self.csum = bool(self.ro_compat & RO_METADATA_CSUM)
        self.gdt_csum = self.csum or bool(self.ro_compat & RO_GDT_CSUM)
        self.seed = u32(0x270) if self.incompat & INCOMPAT_CSUM_SEED else crc32c(0xFFFFFFFF, self.uuid)
        self.check(sb)
        self.groups = -(-(self.blocks - self.first_data) // self.per_group)
        self.per_block = self.bs // self.desc_size
        self.gdb = -(-self.groups // self.per_block)
        self.itb = -(-self.inodes_per_group * self.inode_size // self.bs)

    def check(self, sb: bytes) -> None:
        problem = self.vol.problem
        if self.csum:
            stored, computed = common.u32(sb, 0x3FC), crc32c(0xFFFFFFFF, sb[:0x3FC])
            if sb[0x175] != 1 or stored != computed:
                raise problem(f"superblock checksum 0x{stored:08x} stored, 0x{computed:08x} computed")
        if self.incompat & INCOMPAT_JOURNAL_DEV:
            raise problem("an external journal device, not a file system")
        if self.incompat & INCOMPAT_RECOVER:
            raise problem("the journal needs recovery (not cleanly unmounted): the bitmaps may be stale")
        if not self.state & STATE_VALID or self.state & STATE_ERROR:
            raise problem(f"file system state 0x{self.state:x}: not clean or with errors (run e2fsck)")
        if self.ro_compat & RO_BIGALLOC:
            raise problem("bigalloc (allocation by clusters) is not read")
        if self.first_data != (1 if self.bs == 1024 else 0):
            raise problem(f"s_first_data_block {self.first_data} with {self.bs}-byte blocks")
        if not 256 <= self.per_group <= 8 * self.bs or self.per_group % 8:  # mke2fs's range
            raise problem(f"s_blocks_per_group {self.per_group} with {self.bs}-byte blocks")
        if common.u32(sb, 0x24) != self.per_group:
            raise problem(f"s_clusters_per_group {common.u32(sb, 0x24)} is not s_blocks_per_group {self.per_group}")
        if not 0 < self.inodes_per_group <= 8 * self.bs:
            raise problem(f"s_inodes_per_group {self.inodes_per_group} with {self.bs}-byte blocks")
        if self.blocks <= self.first_data or self.blocks * self.bs > self.vol.size:
            raise problem(f"{self.blocks} blocks of {self.bs} bytes do not fit the partition ({self.vol.size} bytes)")
        if self.desc_size < 32 or self.desc_size & (self.desc_size - 1) or self.desc_size > self.bs:
            raise problem(f"s_desc_size {self.desc_size}")
        if self.bit64 and self.desc_size < 64:
            raise problem(f"64bit with s_desc_size {self.desc_size} (at least 64)")
        if self.inode_size < 128 or self.inode_size & (self.inode_size - 1) or self.inode_size > self.bs:
            raise problem(f"s_inode_size {self.inode_size}")
        groups = -(-(self.blocks - self.first_data) // self.per_group)
        if self.inodes != self.inodes_per_group * groups:
            raise problem(f"s_inodes_count {self.inodes} is not {self.inodes_per_group} per group x {groups} groups")

    def group_first(self, group: int) -> int:
        return self.first_data + group * self.per_group

    def group_blocks(self, group: int) -> int:
        return min(self.per_group, self.blocks - self.group_first(group))

    def has_super(self, group: int) -> bool:
        """ext4_bg_has_super: group 0, the sparse_super2 backups, or 1 and powers of 3, 5, 7."""
        if group == 0:
            return True
        if self.compat & COMPAT_SPARSE_SUPER2:
            return group in self.backup_bgs
        if group <= 1 or not self.ro_compat & RO_SPARSE_SUPER:
            return True
        if not group & 1:
            return False
        return any(_is_power(group, base) for base in (3, 5, 7))

    def meta_bg_group(self, group: int) -> bool:
        return bool(self.incompat & INCOMPAT_META_BG) and group >= self.first_meta_bg * self.per_block

    def base_meta(self, group: int) -> int:
        """ext4_num_base_meta_clusters: the superblock copy, descriptor blocks and reserved descriptor blocks."""
        num = int(self.has_super(group))
        if not self.meta_bg_group(group):
            if num:
                num += (self.first_meta_bg if self.incompat & INCOMPAT_META_BG else self.gdb) + self.reserved_gdt
        else:
            first = group // self.per_block * self.per_block
            num += int(group in (first, first + 1, first + self.per_block - 1))
        return num

    def descriptor_block(self, nr: int) -> int:
        """descriptor_loc: the block of the ``nr``-th block of group descriptors."""
        if not self.incompat & INCOMPAT_META_BG or nr < self.first_meta_bg:
            return self.first_data + nr + 1
        group = self.per_block * nr
        return self.group_first(group) + int(self.has_super(group))


def _is_power(n: int, base: int) -> bool:
    while n > 1 and n % base == 0:
        n //= base
    return n == 1


class _Desc:
    def __init__(self, ext: _Ext, group: int, raw: bytes) -> None:
        u32: Callable[[int], int] = partial(common.u32, raw)
        u16: Callable[[int], int] = partial(common.u16, raw)
        big = ext.desc_size >= 64
        self.block_bitmap = u32(0x0) | (u32(0x20) << 32 if big else 0)
        self.inode_bitmap = u32(0x4) | (u32(0x24) << 32 if big else 0)
        self.inode_table = u32(0x8) | (u32(0x28) << 32 if big else 0)
        self.free = u16(0xC) | (u16(0x2C) << 16 if big else 0)
        self.flags, self.bitmap_csum, stored = u16(0x12), u16(0x18) | (u16(0x38) << 16 if big else 0), u16(0x1E)
        self.bitmap_csum_bits = 32 if big else 16
        if ext.gdt_csum:
            group_le = struct.pack("<I", group)
            if ext.csum:
                computed = crc32c(ext.seed, group_le + raw[:0x1E] + b"\0\0" + raw[0x20:]) & 0xFFFF
            else:
                computed = crc16(crc16(crc16(0xFFFF, ext.uuid), group_le), raw[:0x1E] + raw[0x20:])
            if computed != stored:
                raise ext.vol.problem(
                    f"group {group} descriptor checksum 0x{stored:04x} stored, 0x{computed:04x} computed"
                )


def read_ext(vol: Volume) -> Found:
    """The free blocks of the ext2/3/4 file system of ``vol`` (absolute disk ranges), or ``FsProblem``."""
    sb = vol.read(1024, 1024, "superblock")
    label = sb[0x78:0x88].split(b"\0", 1)[0].decode("utf-8", "replace") or None
    vol.label = label
    ext = _Ext(vol, sb)
    descs = _descriptors(ext)
    used = _metadata(ext, descs)
    free: list[Range] = []
    for group, desc in enumerate(descs):
        count = ext.group_blocks(group)
        if ext.gdt_csum and desc.flags & BG_BLOCK_UNINIT:
            bitmap = _init_bitmap(ext, group, desc)
        else:
            bitmap = _bitmap(ext, group, desc)
        runs = [(ext.group_first(group) + at, n) for at, n in clear_bit_runs(bitmap, count)]
        found = sum(n for _, n in runs)
        if found != desc.free:
            raise vol.problem(f"group {group}: bitmap has {found} free blocks, its descriptor says {desc.free}")
        free.extend(runs)
    free = merge(free)
    clash = _first_overlap(free, used)
    if clash is not None:
        raise vol.problem(f"block {clash} holds file system metadata but a bitmap marks it free")
    return Found(kind_of(sb), ext.bs, [(vol.offset + at * ext.bs, n * ext.bs) for at, n in free], label)


def _descriptors(ext: _Ext) -> list[_Desc]:
    descs: list[_Desc] = []
    for nr in range(ext.gdb):
        block = ext.descriptor_block(nr)
        if not ext.first_data <= block < ext.blocks:
            raise ext.vol.problem(f"group descriptor block {nr} at block {block}: outside the file system")
        raw = ext.vol.read(block * ext.bs, ext.bs, f"group descriptor block {nr}")
        for i in range(min(ext.per_block, ext.groups - nr * ext.per_block)):
            group = nr * ext.per_block + i
            descs.append(_Desc(ext, group, raw[i * ext.desc_size : (i + 1) * ext.desc_size]))
    return descs


def _metadata(ext: _Ext, descs: list[_Desc]) -> list[Range]:
    """Every block the file system's own structures hold (merged), each checked to be inside it."""
    used: list[Range] = [(0, ext.first_data)] if ext.first_data else []
    for group, desc in enumerate(descs):
        used.append((ext.group_first(group), ext.base_meta(group)))
        for what, at, n in (("block bitmap", desc.block_bitmap, 1), ("inode bitmap", desc.inode_bitmap, 1),
                            ("inode table", desc.inode_table, ext.itb)):  # fmt: skip
            if not (ext.first_data <= at and at + n <= ext.blocks):
                raise ext.vol.problem(f"group {group}: {what} at block {at} (+{n}) is outside the file system")
            used.append((at, n))
    return merge(used)


def _bitmap(ext: _Ext, group: int, desc: _Desc) -> bytes:
    data = ext.vol.read(desc.block_bitmap * ext.bs, ext.bs, f"group {group} block bitmap")
    if ext.csum:
        computed = crc32c(ext.seed, data[: ext.per_group // 8])
        if desc.bitmap_csum_bits == 16:
            computed &= 0xFFFF
        if computed != desc.bitmap_csum:
            raise ext.vol.problem(
                f"group {group} block bitmap checksum 0x{desc.bitmap_csum:x} stored, 0x{computed:x} computed"
            )
    return data


def _init_bitmap(ext: _Ext, group: int, desc: _Desc) -> bytes:
    """ext4_init_block_bitmap: the bitmap of a BLOCK_UNINIT group, as the kernel makes it."""
    bits = bytearray(ext.bs)
    first, count = ext.group_first(group), ext.group_blocks(group)

    def mark(at: int) -> None:
        bits[at // 8] |= 1 << at % 8

    for at in range(ext.base_meta(group)):
        mark(at)
    for block in (desc.block_bitmap, desc.inode_bitmap, *range(desc.inode_table, desc.inode_table + ext.itb)):
        if first <= block < first + count:
            mark(block - first)
    return bytes(bits)


def _first_overlap(free: list[Range], used: list[Range]) -> int | None:
    """The first block in both sorted, merged lists of ranges, if any."""
    i = j = 0
    while i < len(free) and j < len(used):
        (a, n), (b, m) = free[i], used[j]
        if a < b + m and b < a + n:
            return max(a, b)
        if a + n <= b + m:
            i += 1
        else:
            j += 1
    return None
