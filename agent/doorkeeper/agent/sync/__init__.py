"""Whitelist sync: the I/O-free bundle verification core (`bundle`), the hub client, device
identity and registration, the local whitelist store, the sync loop, and the background service
that runs sync, heartbeats and entry-log uploads on a schedule."""
