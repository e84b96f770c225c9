"""The agent's capture (issue 17): which partitions a disk holds and the free space of their file systems, read
from the file systems' own allocation bitmaps (ext2/3/4 block bitmaps, the FAT, the NTFS ``$Bitmap``), so the
capture sends free space as zeros (holes).

- ``free_space(read, offset, size) -> FreeSpace`` (``freespace``): the file system at ``offset`` and the disk
  byte ranges it marks free, or none with a ``note`` saying why (never a guess);
- ``partitions(read, disk_size, sector_size) -> tuple[Partition, ...]`` (``partitions``): GPT (primary, else
  backup) or MBR (primaries and logical partitions); ``PartitionTableError`` otherwise.
"""

from provision.agent.capture.freespace import FreeSpace, Read, free_space
from provision.agent.capture.partitions import Partition, PartitionTableError, partitions

__all__ = ["FreeSpace", "Partition", "PartitionTableError", "Read", "free_space", "partitions"]
