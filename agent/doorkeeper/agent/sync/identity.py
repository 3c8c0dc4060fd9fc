"""A door terminal's identity: its keys, the pinned hub key, and registration.

`agent init` makes the device's own Ed25519 and X25519 keys and a storage key
(all 0600, never sent anywhere), redeems the one-time token at the hub, and
pins the hub signing key whose fingerprint the token carries: a hub that
answers with any other key is refused, so there is no trust on first use.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from nacl.secret import SecretBox

from doorkeeper.agent.sync.bundle import Trust
from doorkeeper.agent.sync.hubclient import SYNC, HubClient
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import durable, keys
from doorkeeper.wire import token as tokens
from doorkeeper.wire.keys import KeyPair

IDENTITY_FILE = "identity.json"


class RegistrationError(Exception):
    """Registration failed; the data directory holds no identity afterwards."""


@dataclass(frozen=True)
class Identity:
    device_id: str
    device_name: str
    site_id: str
    site_name: str
    hub_address: str
    hub_sign_key: str  # hex
    hub_box_key: str  # hex
    tls_ca: str = ""

    @property
    def hub_key(self) -> bytes:
        return bytes.fromhex(self.hub_sign_key)


def write_json_atomic(path: Path, data: dict) -> None:  # type: ignore[type-arg]
    """Replace `path` with `data` as JSON, durably (see `durable.write_atomic`)."""
    durable.write_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode(), 0o600)


@dataclass(frozen=True)
class AgentFiles:
    """Paths inside an agent's data directory."""

    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def identity(self) -> Path:
        return self.root / IDENTITY_FILE

    @property
    def whitelist(self) -> Path:
        return self.root / "whitelist.db"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox.db"

    def load_identity(self) -> Identity:
        try:
            data = json.loads(self.identity.read_text())
            return Identity(**data)
        except FileNotFoundError:
            raise RegistrationError(
                f"{self.root} is not a registered agent; run `doorkeeper agent init`"
            ) from None
        except (ValueError, TypeError) as exc:
            raise RegistrationError(f"{self.identity} is corrupt: {exc}") from None

    def device_keys(self) -> KeyPair:
        return keys.KeyPair.load(self.keys, "device")

    def storage_key(self) -> bytes:
        return keys.read_private(self.keys / "storage.key")

    def trust(self) -> Trust:
        ident = self.load_identity()
        return Trust(ident.hub_key, ident.site_id, ident.device_id, self.device_keys().box_key,
                     bytes.fromhex(ident.hub_box_key))


def init_agent(data_dir: Path, hub_address: str, token_text: str, tls_ca: Path | None = None,
               timeout_s: float = 10.0) -> Identity:
    """Create keys, register with the hub using a one-time token, pin the hub key."""
    files = AgentFiles(Path(data_dir))
    if files.identity.exists():
        raise RegistrationError(f"{files.root} is already registered; use a new data directory")
    try:
        token = tokens.Token.parse(token_text)
    except tokens.TokenFormatError as exc:
        raise RegistrationError(str(exc)) from None
    durable.make_dirs(files.root)
    files.root.chmod(0o700)
    if (files.keys / "device.sign.key").exists():
        pair = files.device_keys()
    else:
        pair = keys.KeyPair.generate()
        pair.save(files.keys, "device")
        keys.write_private(files.keys / "storage.key", secrets.token_bytes(SecretBox.KEY_SIZE))
    proof = keys.sign(pair.sign_key, keys.CTX_REGISTER, token.token_id, pair.sign_public, pair.box_public)
    request = pb.RegisterRequest(
        token_id=token.token_id, token_secret=token.secret,
        device_sign_key=pair.sign_public, device_box_key=pair.box_public, proof=proof,
    )
    with HubClient(hub_address, tls_ca=tls_ca, timeout_s=timeout_s) as client:
        response = client.unsigned(SYNC + "Register", request)
    if keys.fingerprint(response.hub_sign_key) != token.hub_fingerprint:
        raise RegistrationError(
            "the hub answered with a signing key whose fingerprint is not the one in the token: "
            "refusing to pin it (wrong hub, or someone in between)"
        )
    if len(response.hub_box_key) != keys.KEY_BYTES or not keys.verify(
        response.hub_sign_key, response.hub_signature, keys.CTX_REGISTERED,
        response.device_id, pair.sign_public, pair.box_public, response.hub_box_key,
    ):
        raise RegistrationError("the hub's registration answer is not signed by the pinned key")
    identity = Identity(
        device_id=response.device_id, device_name=response.device_name,
        site_id=response.site_id, site_name=response.site_name, hub_address=hub_address,
        hub_sign_key=bytes(response.hub_sign_key).hex(), hub_box_key=bytes(response.hub_box_key).hex(),
        tls_ca=str(tls_ca or ""),
    )
    write_json_atomic(files.identity, asdict(identity))
    return identity
