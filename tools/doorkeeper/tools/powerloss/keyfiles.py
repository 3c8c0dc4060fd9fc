"""Power cuts right after a command that writes keys, certificates or tokens returned.

Each trial raises PowerLossError saying what did not survive; it returns when everything did.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from doorkeeper.tools.powerloss.mount import LazyMount, PowerLossError
from doorkeeper.tools.powerloss.rig import (
    HubProcess,
    durable_copy,
    fsync_path,
    hub_with_device,
    listing,
    mounted,
)


@contextlib.contextmanager
def must_survive(what: str, mount: LazyMount) -> Iterator[None]:
    """Turn a failure inside into PowerLossError naming `what` and listing the rebooted disk."""
    try:
        yield
    except PowerLossError:
        raise
    except Exception as exc:
        raise PowerLossError(f"{what} did not survive the cut ({exc}); "
                             f"the disk holds {listing(mount.path)}") from None


def hub_init_trial(root: Path, *, existing_dir: bool) -> None:
    """`doorkeeper hub init` on the disk, a cut right after it returned, then `hub serve` must start.

    `existing_dir`: the data directory already exists durably (as a package would make it);
    otherwise `hub init` creates it. Raises PowerLossError saying what was missing.
    """
    with mounted(root) as mount:
        data = mount.path / "hub"
        if existing_dir:
            data.mkdir()
            fsync_path(mount.path)
        subprocess.run([sys.executable, "-m", "doorkeeper", "hub", "init", "--data", str(data)],
                       check=True, capture_output=True)
        mount.cut()
        mount.start()
        if not (data / "operator.key").exists():
            raise PowerLossError(f"after the cut the hub directory holds {listing(mount.path)}")
        hub = HubProcess(data, (data / "operator.key").read_bytes())
        try:
            with must_survive("a hub that starts", mount):
                hub.start()
        finally:
            hub.stop()


def agent_init_trial(root: Path) -> None:
    """`init_agent` onto the disk, a cut right after it returned: identity and keys must load."""
    from doorkeeper.agent.sync.identity import AgentFiles, init_agent

    hub, token = hub_with_device(root / "hub")
    try:
        with mounted(root) as mount:
            init_agent(mount.path / "agent", hub.address, token)
            mount.cut()
            mount.start()
            files = AgentFiles(mount.path / "agent")
            with must_survive("the agent's identity and keys", mount):
                files.trust()
                files.storage_key()
    finally:
        hub.stop()


def bootstrap_hub_init_trial(root: Path, script: Path) -> None:
    """`deploy/compose-bootstrap.sh hub-init` on the disk, a cut right after it returned: the TLS
    certificate and key and the published CA copy must be whole, and the hub must start."""
    bindir = str(Path(sys.executable).parent)
    with mounted(root) as mount:
        env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
                   DK_DATA=str(mount.path / "hub"), DK_BOOTSTRAP=str(mount.path / "bootstrap"))
        subprocess.run(["sh", str(script), "hub-init"], env=env, check=True, capture_output=True)  # noqa: S607
        mount.cut()
        mount.start()
        tls, published = mount.path / "hub" / "tls", mount.path / "bootstrap" / "hub-ca.pem"
        for path in (tls / "hub.crt", tls / "hub.key", published):
            if not path.exists() or b"-----END " not in path.read_bytes():
                raise PowerLossError(f"{path.relative_to(mount.path)} is missing or torn after the cut; "
                                     f"the disk holds {listing(mount.path)}")
        if published.read_bytes() != (tls / "hub.crt").read_bytes():
            raise PowerLossError("the published CA certificate is not the hub's certificate")
        hub = HubProcess(mount.path / "hub", (mount.path / "hub" / "operator.key").read_bytes())
        try:
            hub.start()
        finally:
            hub.stop()


def rotate_key_trial(root: Path) -> None:
    """`doorkeeper hub rotate-key` on the disk, a cut right after it answered the new key id:
    the hub must come back with that key, its rotation statement and the retired public key."""
    from doorkeeper.hub.hubkeys import ROTATIONS_FILE, HubKeys

    with mounted(root) as mount:
        data = mount.path / "hub"
        durable_copy(_seed_hub(root / "seed"), data)
        done = subprocess.run([sys.executable, "-m", "doorkeeper", "hub", "rotate-key", "--data", str(data)],
                              check=True, capture_output=True, text=True)
        new_id = done.stdout.strip().splitlines()[-1]
        mount.cut()
        mount.start()
        with must_survive("the hub keys", mount):
            keys = HubKeys.load(data / "keys")
        if keys.key_id != new_id or len(keys.rotations) != 1:
            raise PowerLossError(f"after the cut the hub signs with {keys.key_id} (rotated to {new_id}) "
                                 f"and holds {len(keys.rotations)} rotation statements; "
                                 f"{ROTATIONS_FILE} and the pending key did not survive")
        if not list((data / "keys" / "retired").glob("*.sign.pub")):
            raise PowerLossError("the retired public key did not survive the cut")


def _seed_hub(where: Path) -> Path:
    from doorkeeper.hub.server import init_hub

    init_hub(where)
    return where
