"""Helpers shared by tests of several levels and modules (fakes, builders, servers, parsers); no tests here.

A test module imports helpers from here, never from another test module. Asserts in these modules are
rewritten by pytest like those of test modules (tests/__init__.py registers the package).

- ``agent``: fakes for the agent's writer and fetcher (an in-memory image, a scripted HTTP session, a target).
- ``builder``: fakes for the image builder (a DebCache over small trees, a recording store, the cache fixture).
- ``chunk_server``: an image store with one image and ``provision serve`` over it as a process to kill.
- ``cli``: ``run(*argv)``, the command line in this process.
- ``clock``: ``Clock``, a clock the test moves by hand.
- ``e2e``: the lab harness (prerequisites, the lab server and its config, boot watchers, the site's DHCP).
- ``faults``: faults for the fault matrix: a TCP proxy that cuts, stalls or slows the link, another process
  holding the state store's lock, tmpfs mounts and filling them.
- ``files``: sparse files, the sha256 of a file, a tree of files.
- ``hookrun``: the hook runner's fakes (mount tools, the hook's start), a busybox root disk, readers of it.
- ``images``: partitioned sparse disks, an aiohttp app on a thread, zstd and bmap readers.
- ``initramfs``: fake kernel modules, module trees and busybox; newc readers.
- ``launch``: the ``provision`` command line with the state store's busy timeout set first.
- ``lab``: fake serial logs, a fake PC and a run record for the demo's followers and report.
- ``live``: the live environment fixture's result and where it is built; a sample live.json.
- ``netns_hosts``: network namespaces wired into a lab, and DHCP frame captures (interop).
- ``paths``: the repository, samples, golden files, image definitions, shared hardware, the .deb cache.
- ``runs``: whole imaging runs: a site (server, image, recipe), agents as processes or in process, the end
  state every fault-matrix case checks.
- ``serve``: ``provision serve`` as a process on port 0, started and stopped.
- ``sites``: what the e2e imaging sites share: a boot root with the session's live build, the tiny image
  exported, the one run of a MAC.
- ``sshkeys``: authorized_keys lines.
- ``wait``: ``wait_for(condition, timeout)``, polling.
"""
