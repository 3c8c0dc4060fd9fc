"""Power-loss testing: a FUSE file system that drops unsynced writes on a cut (see lazyfs.py)."""
