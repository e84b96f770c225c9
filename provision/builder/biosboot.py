"""GRUB for BIOS PCs, set up on the raw file: core.img into the BIOS boot partition, boot.img into the MBR.

This is what ``grub-bios-setup`` (GRUB 2.06 ``util/setup.c``, called by ``grub-install --target=i386-pc``)
does when it embeds core.img in a GPT BIOS boot partition, without its Reed-Solomon codes
(``--no-rs-codes``): ``grub-install`` needs the disk's partitions as block devices, which kernels without
partition-table support (the lab VMs') cannot give a loop device, and ``grub-bios-setup`` insists on
guessing a root device from the folder it reads. Here the bytes are written directly:

- core.img (from ``grub-mkimage -O i386-pc``): its first sector (diskboot) ends with a block list; the one
  entry written says "the next N-1 sectors, loaded at segment 0x820"; a zero entry terminates it.
- boot.img: keeps the disk's BPB area and partition table; the jump over the drive check becomes two NOPs
  (buggy BIOSes pass a wrong drive number); boot drive 0xFF (use the BIOS's); the LBA of core.img.
"""

from __future__ import annotations

import struct
from pathlib import Path

from provision.builder.errors import ImageBuildError

SECTOR = 512
BPB_START, BPB_END = 0x03, 0x5A  # GRUB_BOOT_MACHINE_BPB_START / _END
KERNEL_SECTOR = 0x5C  # GRUB_BOOT_MACHINE_KERNEL_SECTOR: u64 LBA of core.img's first sector
BOOT_DRIVE = 0x64  # GRUB_BOOT_MACHINE_BOOT_DRIVE
DRIVE_CHECK = 0x66  # GRUB_BOOT_MACHINE_DRIVE_CHECK: a 2-byte jmp
NT_MAGIC, PART_END = 0x1B8, 0x1FE  # disk signature + partition table, kept from the disk
BLOCK = struct.Struct("<QHH")  # grub_boot_blocklist: start LBA, sectors, segment
KERNEL_SEG = 0x800  # GRUB_BOOT_I386_PC_KERNEL_SEG
NO_RS_LENGTH = 0x14  # GRUB_KERNEL_I386_PC_NO_REED_SOLOMON_LENGTH, in core.img's second sector
MAX_CORE_SECTORS = (0x78000 - 0x9000) // SECTOR  # what fits below GRUB's link address limit


def _fail(message: str) -> ImageBuildError:
    return ImageBuildError(message, step="bootloader-bios")


def prepare_core(core_img: bytes, first_lba: int) -> bytes:
    """core.img padded to whole sectors, its block list pointing at the sectors after ``first_lba``."""
    nsec = -(-len(core_img) // SECTOR)
    if len(core_img) < 2 * SECTOR:
        raise _fail(f"core.img is {len(core_img)} bytes: too small to be GRUB's")
    if nsec > MAX_CORE_SECTORS:
        raise _fail(f"core.img takes {nsec} sectors, more than the {MAX_CORE_SECTORS} GRUB can load")
    (no_rs_length,) = struct.unpack_from("<H", core_img, SECTOR + NO_RS_LENGTH)
    if no_rs_length == 0xFFFF:
        raise _fail("core.img version mismatch (no Reed-Solomon length field)")
    core = bytearray(core_img.ljust(nsec * SECTOR, b"\0"))
    first_block = SECTOR - BLOCK.size
    pos = first_block
    while BLOCK.unpack_from(core, pos)[1]:  # clean out the default block list down to its terminator
        BLOCK.pack_into(core, pos, 0, 0, 0)
        pos -= BLOCK.size
        if pos <= 0:
            raise _fail("core.img has no block list terminator")
    if nsec > 1:
        BLOCK.pack_into(core, first_block, first_lba + 1, nsec - 1, KERNEL_SEG + (SECTOR >> 4))
        BLOCK.pack_into(core, first_block - BLOCK.size, 0, 0, 0)
    else:
        BLOCK.pack_into(core, first_block - BLOCK.size, 0, 0, 0)
    return bytes(core)


def prepare_boot(boot_img: bytes, mbr: bytes, first_lba: int) -> bytes:
    """boot.img with the disk's BPB and partition table and the LBA of core.img."""
    if len(boot_img) != SECTOR or len(mbr) != SECTOR:
        raise _fail(f"boot.img is {len(boot_img)} bytes, not {SECTOR}")
    boot = bytearray(boot_img)
    boot[BPB_START:BPB_END] = mbr[BPB_START:BPB_END]
    boot[DRIVE_CHECK : DRIVE_CHECK + 2] = b"\x90\x90"
    boot[NT_MAGIC:PART_END] = mbr[NT_MAGIC:PART_END]
    boot[BOOT_DRIVE] = 0xFF
    struct.pack_into("<Q", boot, KERNEL_SECTOR, first_lba)
    return bytes(boot)


def embed(raw: Path, boot_img: bytes, core_img: bytes, first_lba: int, sectors: int) -> int:
    """Write core.img at ``first_lba`` (a BIOS boot partition of ``sectors``) and boot.img in the MBR of the
    raw disk ``raw``. Returns the sectors core.img takes."""
    core = prepare_core(core_img, first_lba)
    nsec = len(core) // SECTOR
    if nsec > sectors:
        raise _fail(f"core.img takes {nsec} sectors; the BIOS boot partition has {sectors}")
    with raw.open("r+b") as disk:
        mbr = disk.read(SECTOR)
        if mbr[510:512] != b"\x55\xaa":
            raise _fail(f"{raw}: no partition table in the first sector")
        boot = prepare_boot(boot_img, mbr, first_lba)
        disk.seek(first_lba * SECTOR)
        disk.write(core)
        disk.seek(0)
        disk.write(boot)
    return nsec
