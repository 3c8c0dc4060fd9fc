"""Door terminals at the hub: one-time registration tokens, signed reports, fleet status.

Registration, as a door meets it: it asks the hub to prove who it is (a
`Challenge` with a nonce of its own, answered with `hub_proof`), checks that
key against the fingerprint its token carries, and only then sends the token,
its secret sealed to the hub's box key. `register` binds the door's keys but
leaves the token unspent; the door's first signed call spends it
(`Authenticator.verify`), so a registration that fails anywhere on the way
back to the door costs nothing and can be retried with the same token.

Fleet status shows only what devices themselves reported in signed manifests
(version and state digest), never what the hub merely queued for them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from nacl.exceptions import CryptoError
from nacl.public import SealedBox

from doorkeeper.hub.decisions import checked_rows
from doorkeeper.hub.doormodes import shadow_doors
from doorkeeper.hub.hubkeys import HubKeys
from doorkeeper.hub.rollouts import early_at, honours_effective_at, served
from doorkeeper.hub.store import Conflict, Device, DeviceReport, HubStore, NotFound, Token
from doorkeeper.hub.whitelist import InvalidRequest, check_name
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from doorkeeper.wire import token as tokens
from doorkeeper.wire.freshness import BadNonce, check_nonce

log = logging.getLogger("doorkeeper.hub")

DEFAULT_TOKEN_TTL_S = 24 * 3600
MAX_SEALED_SECRET_BYTES = 256
MAX_TOKEN_TTL_S = 30 * 24 * 3600


class RegistrationRefused(Exception):
    """A token was unknown, used, expired, or its proof did not verify. Nothing changed."""


class BadManifest(Exception):
    """A device report does not verify or is not about that device."""


@dataclass(frozen=True)
class Issued:
    device: Device
    token: str
    expires_at: int


class Devices:
    def __init__(self, store: HubStore, hub_keys: HubKeys, clock: Callable[[], float] = time.time):
        self.store = store
        self.keys = hub_keys
        self.clock = clock

    def add(self, site_ref: str, name: str, ttl_s: int = 0) -> Issued:
        """Create a door and its one-time token; the hub keeps only the token's hash."""
        check_name("door", name)
        ttl = self._ttl(ttl_s)
        site = self.store.get_site(site_ref)
        now = int(self.clock())
        tok = tokens.Token.new(keys.fingerprint(self.keys.pair.sign_public))
        device = Device(device_id=uuid.uuid4().hex, site_id=site.site_id, name=name, created_at=now)
        self.store.create_device(
            device,
            Token(tok.token_id, site.site_id, device.device_id, tokens.secret_hash(tok.secret), now + ttl),
        )
        return Issued(device, str(tok), now + ttl)

    def find(self, site_ref: str, device_ref: str) -> Device:
        """A door by id, or by name within `site_ref`."""
        try:
            return self.store.get_device(device_ref)
        except NotFound:
            pass
        if not site_ref:
            raise NotFound(f"no door with id {device_ref!r}; give --site to find it by name")
        site = self.store.get_site(site_ref)
        for d in self.store.list_devices(site.site_id):
            if d.name == device_ref:
                return d
        raise NotFound(f"no door named {device_ref!r} in site {site.name}")

    def revoke(self, site_ref: str, device_ref: str) -> Device:
        """From now on the door's key is refused on every call (fetch, report, upload, watch)."""
        return self.store.revoke_device(self.find(site_ref, device_ref).device_id, int(self.clock()))

    def replace(self, site_ref: str, name: str, ttl_s: int = 0) -> Issued:
        """A new one-time token for an existing door: same id, name and history; the old
        keys are refused from now on, the new terminal registers with the token."""
        device = self.find(site_ref, name)
        ttl = self._ttl(ttl_s)
        now = int(self.clock())
        tok = tokens.Token.new(keys.fingerprint(self.keys.pair.sign_public))
        device = self.store.replace_device(device.device_id, Token(
            tok.token_id, device.site_id, device.device_id, tokens.secret_hash(tok.secret), now + ttl))
        return Issued(device, str(tok), now + ttl)

    @staticmethod
    def _ttl(ttl_s: int) -> int:
        ttl = ttl_s or DEFAULT_TOKEN_TTL_S
        if not 60 <= ttl <= MAX_TOKEN_TTL_S:
            raise InvalidRequest(f"token lifetime must be 60 s to {MAX_TOKEN_TTL_S} s")
        return ttl

    def hub_proof(self, challenge: bytes) -> tuple[bytes, bytes, bytes]:
        """(sign key, box key, signature over the door's `challenge` and both keys)."""
        pair = self.keys.pair
        return pair.sign_public, pair.box_public, keys.sign(
            pair.sign_key, keys.CTX_HUB_PROOF, challenge, pair.sign_public, pair.box_public
        )

    def _token_secret(self, req: pb.RegisterRequest) -> bytes:
        if not req.sealed_token_secret:
            return bytes(req.token_secret)
        if len(req.sealed_token_secret) > MAX_SEALED_SECRET_BYTES:
            raise RegistrationRefused("unknown token")
        try:
            return SealedBox(self.keys.pair.box_key).decrypt(bytes(req.sealed_token_secret))
        except CryptoError:
            raise RegistrationRefused("unknown token") from None

    def register(self, req: pb.RegisterRequest) -> pb.RegisterResponse:
        """Bind the device's keys to a token's device. Used or expired tokens are refused.

        The token is not spent here: the device's first signed call spends it. Until
        then a registration with the same token (a retry after a lost answer, or a door
        that refused this one) rebinds.
        """
        if len(req.device_sign_key) != keys.KEY_BYTES or len(req.device_box_key) != keys.KEY_BYTES:
            raise RegistrationRefused("device keys must be 32-byte Ed25519 and X25519 public keys")
        if len(req.token_id) > 64:
            raise RegistrationRefused("unknown token")
        try:
            stored = self.store.get_token(req.token_id)
        except NotFound:
            raise RegistrationRefused("unknown token") from None
        if not tokens.secret_matches(self._token_secret(req), stored.secret_hash):
            raise RegistrationRefused("unknown token")
        now = int(self.clock())
        if stored.used_at is not None:
            raise RegistrationRefused("token was already used; ask for a new one with `device add`")
        if stored.expires_at <= now:
            raise RegistrationRefused("token expired; ask for a new one with `device add`")
        if not keys.verify(
            req.device_sign_key, req.proof, keys.CTX_REGISTER,
            req.token_id, req.device_sign_key, req.device_box_key,
        ):
            raise RegistrationRefused("proof of key possession does not verify")
        try:
            device = self.store.bind_token_keys(req.token_id, req.device_sign_key, req.device_box_key, now)
        except Conflict:
            raise RegistrationRefused("token was already used or expired") from None
        site = self.store.get_site(device.site_id)
        return pb.RegisterResponse(
            site_id=site.site_id,
            site_name=site.name,
            device_id=device.device_id,
            device_name=device.name,
            hub_sign_key=self.keys.pair.sign_public,
            hub_key_id=self.keys.key_id,
            hub_box_key=self.keys.pair.box_public,
            hub_signature=keys.sign(
                self.keys.pair.sign_key, keys.CTX_REGISTERED,
                device.device_id, req.device_sign_key, req.device_box_key, self.keys.pair.box_public,
            ),
        )

    def report(self, device: Device, signed: pb.SignedManifest) -> pb.Manifest:
        """Record a device's signed manifest; returns it parsed."""
        if device.sign_public is None:
            raise BadManifest("device is not registered")
        if len(signed.manifest) > 4096:
            raise BadManifest("manifest too large")
        if not keys.verify(device.sign_public, signed.signature, keys.CTX_MANIFEST, signed.manifest):
            raise BadManifest("manifest signature does not verify with the device key")
        try:
            m = pb.Manifest.FromString(signed.manifest)
        except DecodeError:
            raise BadManifest("manifest does not parse") from None
        if m.device_id != device.device_id or m.site_id != device.site_id:
            raise BadManifest("manifest is about another device or site")
        try:
            check_nonce(m.beacon_nonce)
        except BadNonce as exc:
            raise BadManifest(f"beacon nonce: {exc}") from None
        now = int(self.clock())
        decisions, dropped = checked_rows(m.decisions, now)
        if dropped:
            log.warning("report: %d decision hours left out (clock or repeats)", dropped,
                        extra={"device_id": device.device_id})
        self.store.record_report(
            DeviceReport(
                device_id=device.device_id,
                version=m.version,
                state_digest=m.state_digest,
                person_count=m.person_count,
                reported_at=now,
                device_time=m.device_time,
                manifest=signed.manifest,
                signature=signed.signature,
                stale=m.stale,
                last_error=m.last_error[:500],
                outbox_backlog=m.outbox_backlog,
                outbox_dropped=m.outbox_dropped,
                decisions=decisions,
            )
        )
        return m

    def status(self, site_ref: str = "") -> list[pb.DeviceStatus]:
        sites = [self.store.get_site(site_ref)] if site_ref else self.store.list_sites()
        out = []
        now = int(self.clock())
        for site in sites:
            config = pb.SiteConfig.FromString(self.keys.unseal(site.config_sealed))
            validity = config.offline_validity_s
            shadow = shadow_doors(config)
            rollout = self.store.get_rollout(site.site_id)
            reports = self.store.latest_reports(site.site_id)
            for d in self.store.list_devices(site.site_id):
                r = reports.get(d.device_id)
                # The head, or a rollout's base (the head early for a door that honours it).
                early = early_at(rollout, d.device_id) > 0 and r is not None \
                    and honours_effective_at(pb.Manifest.FromString(r.manifest))
                target = served(site, rollout, d.device_id, early)
                st = pb.DeviceStatus(
                    device_id=d.device_id, site_id=d.site_id, name=d.name,
                    site_version=site.version, registered=d.registered_at is not None,
                    revoked_at=d.revoked_at or 0, created_at=d.created_at,
                    mode=pb.DOOR_MODE_SHADOW if d.device_id in shadow else pb.DOOR_MODE_ENFORCE,
                    target_version=target.version,
                )
                if r is not None:
                    st.reported_version = r.version
                    st.reported_digest = r.state_digest
                    st.reported_at = r.reported_at
                    st.last_seen = r.reported_at
                    st.in_sync = r.version == target.version and r.state_digest == target.state_digest
                    st.digest_mismatch = r.version == target.version and r.state_digest != target.state_digest
                    # A door unheard of for the site's offline-validity period has had no fresh
                    # beacon either: it is deciding under the site's stale policy.
                    st.stale = r.stale or (validity > 0 and now - r.reported_at > validity)
                    st.last_error = r.last_error
                    st.outbox_backlog = r.outbox_backlog
                    st.clock_skew_s = r.device_time - r.reported_at if r.device_time else 0
                    m = pb.Manifest.FromString(r.manifest)  # parsed and verified when recorded
                    st.behind, st.known_version = m.behind, m.known_version
                    # The door's own word on how it acts and what it holds back or refused.
                    st.reported_mode = m.mode
                    st.pending_version, st.pending_effective_at = m.pending_version, m.pending_effective_at
                    st.refused_version, st.refused_reason = m.refused_version, m.refused_reason[:500]
                out.append(st)
        return out
