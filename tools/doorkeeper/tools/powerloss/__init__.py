"""Power-loss testing: durability proven with power cuts, not kills.

- `lazyfs`: the FUSE file system (daemon) that keeps unsynced data and names in memory and
  loses them at a cut; `mount`: mount, cut and reboot it (`LazyMount`).
- `workers`: writers that run on the mount and print what they were told is stored.
- `tally`: acknowledged against survived, compared by contents.
- `rig`: what trials share (writer processes, a hub process, hub clients, reading stores back).
- `trials`: the stores (hub, hub entry logs, agent whitelist, agent outbox, plain SQLite);
  `keyfiles`: key, certificate and token files written right before a cut.

Tests: tests/powerloss. Long form: `doorkeeper bench durability`.
"""
