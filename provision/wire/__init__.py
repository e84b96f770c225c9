"""The contract between the server and the live environment's agent, in the standard library only.

- ``api``: the API's messages (hello, plan, progress, report, firstboot and their answers) as typed classes
  with ``from_dict``/``to_dict``; ``schema``: how they are checked.
- ``paths``: every URL the server serves (the API, boot scripts, images, chunks).
- ``index``: the image index reader and the canonical JSON that names a version.
- ``probe``: the probe files the agent collects and the server reads, and the one ``lsblk`` reader.

The agent imports this package, ``provision.errors`` and ``provision.macaddr`` and nothing else of provision;
the server imports it for the same shapes. Nothing about the API is written anywhere else.
"""
