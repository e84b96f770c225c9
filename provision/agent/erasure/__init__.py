"""Donor data erasure in the live environment, drive by drive (issue 15; docs/erasure.md).

- ``drives``: what a drive is and can do (``inspect_drive`` -> ``DriveInfo``), from hdparm, nvme-cli,
  sg3_utils and smartctl, read by the pure parsers ``hdparm``, ``nvme``, ``scsi`` and ``smart``;
- ``methods``: the method NIST SP 800-88 Rev. 1 says to use (``choose_method`` -> ``Choice``);
- ``commands``: the firmware method run (``run_method``) and the drive prepared first (``prepare_drive``:
  hidden areas removed, a frozen drive unfrozen);
- ``overwrite`` and the verification: one pass of zeros, and the read-back that checks the pattern.
"""
