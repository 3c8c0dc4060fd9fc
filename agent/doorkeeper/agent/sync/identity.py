"""A door terminal's identity: its keys, the pinned hub key, and registration.

`agent init` makes the device's own Ed25519 and X25519 keys and a storage key
(all 0600, never sent anywhere), redeems the one-time token at the hub, and
pins the hub signing key whose fingerprint the token carries: a hub that
answers with any other key is refused, so there is no trust on first use.

The hub proves its key before the token leaves the door: the door sends a
nonce of its own (`Challenge.hub_challenge`), and only when the answer is
signed over it by the key the token names does it send the token, its secret
sealed to the hub's box key that signature vouched for, so nobody else can
read it even on a plaintext link. The hub spends the token at the door's first
signed call, made here once the identity is on disk: a registration that fails
on the way (an impostor, a lost answer, a full disk) leaves the token usable.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from nacl.public import PublicKey, SealedBox
from nacl.secret import SecretBox

from doorkeeper.agent.sync.bundle import Trust
from doorkeeper.agent.sync.hubclient import FAILOVER_CODES, SYNC, HubClient, describe, transient
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import durable, keys
from doorkeeper.wire import token as tokens
from doorkeeper.wire.freshness import new_nonce
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

    def endpoint(self, hub_address: str | None = None, tls_ca: Path | None = None) -> tuple[str, Path | None]:
        """Where to dial the hub and the CA to verify it with: the configured ones (config
        file, environment, command line) win over those recorded at registration, so a hub
        that moved is followed by changing the configuration, not by registering again."""
        ca = tls_ca if tls_ca is not None else (Path(self.tls_ca) if self.tls_ca else None)
        return hub_address or self.hub_address, ca


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
    def held(self) -> Path:
        """Verified bundles waiting for their effective time (`staging.HeldBundles`)."""
        return self.root / "held"

    @property
    def counts(self) -> Path:
        """Hourly decision counts (`doorkeeper.agent.entries.counts`)."""
        return self.root / "counts.db"

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
    with HubClient(hub_address, tls_ca=tls_ca, timeout_s=timeout_s) as client:
        hub_sign, hub_box = _first_hub_proving_its_key(client, token)
        request = pb.RegisterRequest(
            token_id=token.token_id,
            sealed_token_secret=SealedBox(PublicKey(hub_box)).encrypt(token.secret),
            device_sign_key=pair.sign_public, device_box_key=pair.box_public, proof=proof,
        )
        response = client.unsigned(SYNC + "Register", request)
        if response.hub_sign_key != hub_sign or response.hub_box_key != hub_box or not keys.verify(
            hub_sign, response.hub_signature, keys.CTX_REGISTERED,
            response.device_id, pair.sign_public, pair.box_public, response.hub_box_key,
        ):
            raise RegistrationError("the hub's registration answer is not signed by the pinned key")
        identity = Identity(
            device_id=response.device_id, device_name=response.device_name,
            site_id=response.site_id, site_name=response.site_name, hub_address=hub_address,
            hub_sign_key=hub_sign.hex(), hub_box_key=hub_box.hex(), tls_ca=str(tls_ca or ""),
        )
        write_json_atomic(files.identity, asdict(identity))
    _complete(files, identity, pair, tls_ca, timeout_s)
    return identity


def _first_hub_proving_its_key(client: HubClient, token: tokens.Token) -> tuple[bytes, bytes]:
    """`_hub_proves_its_key` with each of several hub addresses in turn while they do not
    answer (nothing of the token is sent before a hub proved its key); the client then
    stays with the one that answered for the registration itself."""
    for left in range(len(client.addresses), 0, -1):
        try:
            return _hub_proves_its_key(client, token)
        except grpc.RpcError as exc:
            if left == 1 or exc.code() not in FAILOVER_CODES:  # type: ignore[attr-defined]
                raise
    raise AssertionError("unreachable")


def _hub_proves_its_key(client: HubClient, token: tokens.Token) -> tuple[bytes, bytes]:
    """The hub's (sign, box) keys once it signed our nonce with the key the token names.

    Raises RegistrationError before anything of the token has been sent."""
    challenge = new_nonce()
    hello = client.unsigned(SYNC + "Challenge", pb.ChallengeRequest(hub_challenge=challenge))
    hub_sign, hub_box = bytes(hello.hub_sign_key), bytes(hello.hub_box_key)
    if keys.fingerprint(hub_sign) != token.hub_fingerprint:
        raise RegistrationError(
            "the hub answered with a signing key whose fingerprint is not the one in the token: "
            "refusing to pin it or to send it the token (wrong hub, or someone in between)"
        )
    if len(hub_box) != keys.KEY_BYTES or not keys.verify(
        hub_sign, hello.hub_proof, keys.CTX_HUB_PROOF, challenge, hub_sign, hub_box
    ):
        raise RegistrationError("the hub did not prove it holds the key the token names; token not sent")
    return hub_sign, hub_box


def _complete(files: AgentFiles, identity: Identity, pair: KeyPair, tls_ca: Path | None,
              timeout_s: float) -> None:
    """The first signed call (an empty report), which makes the hub spend the token.

    Refused: someone registered other keys with this token meanwhile, so our identity is
    void. Unreachable: the identity stands, and the agent's first call completes it."""
    manifest = pb.Manifest(site_id=identity.site_id, device_id=identity.device_id).SerializeToString()
    signed = pb.SignedManifest(manifest=manifest,
                               signature=keys.sign(pair.sign_key, keys.CTX_MANIFEST, manifest))
    try:
        with HubClient(identity.hub_address, identity.device_id, pair.sign_key, tls_ca, timeout_s) as signer:
            signer.call(SYNC + "Report", signed)
    except grpc.RpcError as exc:
        if transient(exc):
            return
        files.identity.unlink()
        raise RegistrationError(f"the hub did not complete the registration: {describe(exc)}") from None
