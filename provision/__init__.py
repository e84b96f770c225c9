"""provision: network-boot disk-imaging and provisioning server."""

__version__ = "0.1.0"
