// Bundle verification and apply, as PROTOCOL.md sections 7, 9-13 and 18 describe them.
// Bytes in, verdicts out: no network, no files. A refusal throws a BundleError and leaves
// the whitelist object untouched (apply works on a copy).
'use strict';

const w = require('./wire');

class BundleError extends Error {
  constructor(kind, message, resync = false) { super(`${kind}: ${message}`); this.kind = kind; this.resync = resync; }
}

const SNAPSHOT = 2, DELTA = 1;
const MiB = 1024 * 1024;

// A whitelist as a door holds it: version, config bytes, person record bytes by id.
function emptyWhitelist() { return { version: 0, config: null, persons: {}, digest: '' }; }

function digestOf(wl) {
  const configHash = wl.config ? w.sha256(w.unhex(wl.config)) : Buffer.alloc(0);
  const persons = w.sortedById(Object.entries(wl.persons)).map(([id, rec]) => [id, w.sha256(w.unhex(rec))]);
  return w.stateDigest(configHash, persons);
}

function verifySigned(trust, raw, signature, context) {
  if (raw.length > 64 * 1024) throw new BundleError('Oversized', 'signed statement over 64 KiB');
  if (!w.verify(trust.hubSignKey, signature, context, raw)) {
    throw new BundleError('Forged', 'signature does not verify with the pinned hub key');
  }
}

function verifyHeader(signed, trust, current, now, resync = false) {
  const raw = Buffer.from(signed.header);
  verifySigned(trust, raw, Buffer.from(signed.signature), 'bundle-header');
  const h = w.decode('BundleHeader', raw);
  if (h.key_id !== w.keyId(trust.hubSignKey)) throw new BundleError('Forged', 'header names another hub key');
  if (h.format !== 1) throw new BundleError('Malformed', `bundle format ${h.format}`);
  if (h.device_id !== trust.deviceId || h.site_id !== trust.siteId) throw new BundleError('WrongDevice', 'bound elsewhere');
  if (h.kind === SNAPSHOT) {
    if (h.from_version !== 0) throw new BundleError('Malformed', 'snapshot must start at 0');
    if (h.to_version < current) throw new BundleError('Rollback', `snapshot to ${h.to_version} < ${current}`);
    if (h.to_version === current && !resync) throw new BundleError('NothingNew', `already at ${current}`);
  } else if (h.kind === DELTA) {
    if (h.to_version <= h.from_version) throw new BundleError('Malformed', 'delta must move forward');
    if (h.from_version !== current) {
      if (h.to_version < current) throw new BundleError('Rollback', `delta to ${h.to_version} < ${current}`);
      if (h.to_version === current) throw new BundleError('NothingNew', `already at ${current}`);
      throw new BundleError('VersionGap', `delta from ${h.from_version}, we hold ${current}`, true);
    }
  } else throw new BundleError('Malformed', `unknown kind ${h.kind}`);
  if (now > h.expires_at) throw new BundleError('Expired', `expired at ${h.expires_at}`);
  const n = h.chunk_length.length;
  if (n === 0 || n !== h.chunk_sha256.length || n > 4096) throw new BundleError('Oversized', `${n} chunks`);
  if (h.chunk_length.some((l) => l < 40 || l > 3 * MiB)) throw new BundleError('Oversized', 'chunk size');
  const total = h.chunk_length.reduce((a, b) => a + b, 0);
  if (total !== h.payload_length || total > 2048 * MiB) throw new BundleError('Oversized', 'payload length');
  if (h.person_count > 1000000) throw new BundleError('Oversized', 'person count');
  if (h.state_digest.length !== 32 || h.ciphertext_sha256.length !== 32) throw new BundleError('Malformed', 'digest sizes');
  return h;
}

function checkChunk(h, index, data) {
  if (index < 0 || index >= h.chunk_length.length) throw new BundleError('Truncated', `chunk index ${index}`);
  if (data.length !== h.chunk_length[index]) throw new BundleError('Truncated', `chunk ${index} length`);
  if (!w.equal(w.sha256(data), h.chunk_sha256[index])) throw new BundleError('Truncated', `chunk ${index} hash`);
}

function parseRecord(raw) {
  if (raw.length > 64 * 1024) throw new BundleError('Malformed', 'person record over 64 KiB', true);
  let rec;
  try { rec = w.decode('PersonRecord', raw); } catch (e) { throw new BundleError('Malformed', 'record does not parse', true); }
  if (!rec.person_id || rec.person_id.length > 64) throw new BundleError('Malformed', 'bad person id', true);
  if (rec.templates.length > 16) throw new BundleError('Malformed', 'too many templates', true);
  for (const t of rec.templates) w.decodeTemplate(t);
  return rec;
}

// Decrypt every chunk and apply; returns a NEW whitelist, or throws (the old one is untouched).
function apply(wl, h, chunks, trust) {
  let key;
  try { key = w.unwrapKey(h.wrapped_key, trust.hubBoxKey, trust.deviceBox); } catch (e) {
    throw new BundleError('Undecryptable', 'content key was not boxed from the pinned hub key to us');
  }
  const next = h.kind === SNAPSHOT ? emptyWhitelist() : { ...wl, persons: { ...wl.persons } };
  chunks.forEach((data, i) => {
    checkChunk(h, i, data);
    let plain;
    try { plain = w.decryptChunk(key, data); } catch (e) { throw new BundleError('Undecryptable', `chunk ${i}`); }
    let batch;
    try { batch = w.decode('ChangeBatch', plain); } catch (e) { throw new BundleError('Malformed', `chunk ${i} does not parse`, true); }
    for (const c of batch.changes) {
      if (c.change === 'upsert_record') {
        const rec = parseRecord(Buffer.from(c.upsert_record));
        next.persons[rec.person_id] = w.hex(c.upsert_record);
      } else if (c.change === 'remove_person_id') {
        delete next.persons[c.remove_person_id];
      } else if (c.change === 'site_config') {
        w.decode('SiteConfig', c.site_config);
        next.config = w.hex(c.site_config);
      } else throw new BundleError('Malformed', 'empty change', true);
    }
  });
  const digest = digestOf(next);
  if (!w.equal(digest, h.state_digest) || Object.keys(next.persons).length !== h.person_count) {
    throw new BundleError('DigestMismatch', `state after ${h.to_version} is not the hub's`, true);
  }
  next.version = h.to_version;
  next.digest = w.hex(digest);
  return next;
}

function verifyBeacon(signed, trust) {
  const raw = Buffer.from(signed.beacon);
  verifySigned(trust, raw, Buffer.from(signed.signature), 'beacon');
  const b = w.decode('Beacon', raw);
  if (b.site_id !== trust.siteId) throw new BundleError('WrongDevice', 'beacon for another site');
  return b;
}

// The trust after a rotation, or null when it does not start at our pinned key (section 18).
function followRotation(signed, trust) {
  const raw = Buffer.from(signed.rotation);
  if (raw.length > 64 * 1024) throw new BundleError('Oversized', 'rotation');
  const r = w.decode('KeyRotation', raw);
  if (r.old_key_id !== w.keyId(trust.hubSignKey)) return null;
  if (!w.verify(trust.hubSignKey, Buffer.from(signed.signature), 'key-rotation', raw)) {
    throw new BundleError('Forged', 'rotation not signed by the pinned key');
  }
  const key = Buffer.from(r.new_sign_key);
  if (key.length !== 32 || r.new_key_id !== w.keyId(key)) throw new BundleError('Forged', 'rotation names a malformed key');
  return { ...trust, hubSignKey: key };
}

module.exports = { BundleError, emptyWhitelist, digestOf, verifyHeader, checkChunk, apply, verifyBeacon, followRotation, SNAPSHOT, DELTA };
