// The doorkeeper v1 byte formats, written from protos/PROTOCOL.md (section numbers below).
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const protobuf = require('protobufjs');
const sodiumModule = require('libsodium-wrappers-sumo');

const PROTO = path.resolve(__dirname, '..', '..', 'protos', 'doorkeeper', 'v1', 'doorkeeper.proto');
const root = protobuf.parse(fs.readFileSync(PROTO, 'utf8'), { keepCase: true }).root;

let sodium = null;
async function ready() {
  await sodiumModule.ready;
  sodium = sodiumModule;
  return sodium;
}

// ------------------------------------------------------------------ bytes

const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (s) => Buffer.from(s, 'hex');
const sha256 = (...parts) => {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const u32be = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const u64be = (n) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return b; };
const equal = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

// ------------------------------------------------------------------ protobuf (section 1)

function type(name) { return root.lookupType('doorkeeper.v1.' + name); }
function encode(name, obj) { const t = type(name); return Buffer.from(t.encode(t.fromObject(obj)).finish()); }
function decode(name, bytes) {
  const t = type(name);
  return t.toObject(t.decode(Buffer.from(bytes)), { longs: Number, enums: Number, defaults: true, oneofs: true });
}
function enumValue(enumName, valueName) { return root.lookupEnum('doorkeeper.v1.' + enumName).values[valueName]; }

// ------------------------------------------------------------------ keys (section 2)

function signKeypair(seed) {
  const kp = sodium.crypto_sign_seed_keypair(Buffer.from(seed));
  return { seed: Buffer.from(seed), publicKey: Buffer.from(kp.publicKey), secretKey: Buffer.from(kp.privateKey) };
}
function boxKeypair(secret) {
  return { secretKey: Buffer.from(secret), publicKey: Buffer.from(sodium.crypto_scalarmult_base(Buffer.from(secret))) };
}
const fingerprint = (pk) => sha256(pk);
const keyId = (pk) => hex(fingerprint(pk)).slice(0, 16);

const B32 = 'abcdefghijklmnopqrstuvwxyz234567';
function b32encode(bytes) {
  let bits = 0, value = 0, out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte; bits += 8;
    while (bits >= 5) { out += B32[(value >>> (bits - 5)) & 31]; bits -= 5; }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}
function b32decode(text) {
  let bits = 0, value = 0; const out = [];
  for (const ch of text.toLowerCase()) {
    const v = B32.indexOf(ch);
    if (v < 0) throw new Error('not base32');
    value = (value << 5) | v; bits += 5;
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 255); bits -= 8; }
  }
  return Buffer.from(out);
}
const fingerprintText = (pk) => 'SHA256:' + b32encode(fingerprint(pk));

// ------------------------------------------------------------------ signatures (section 3)

function frame(context, parts) {
  const chunks = [Buffer.from('doorkeeper/v1/' + context + '\0', 'utf8')];
  for (const p of parts) {
    let raw;
    if (typeof p === 'number' || typeof p === 'bigint') raw = u64be(p);
    else if (typeof p === 'string') raw = Buffer.from(p, 'utf8');
    else raw = Buffer.from(p);
    chunks.push(u32be(raw.length), raw);
  }
  return Buffer.concat(chunks);
}
function sign(keypair, context, ...parts) {
  return Buffer.from(sodium.crypto_sign_detached(frame(context, parts), keypair.secretKey));
}
function verify(publicKey, signature, context, ...parts) {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  return sodium.crypto_sign_verify_detached(Buffer.from(signature), frame(context, parts), Buffer.from(publicKey));
}

// ------------------------------------------------------------------ token (section 4)

function parseToken(text) {
  text = text.trim();
  if (text.length > 200) throw new Error('token too long');
  const parts = text.split('-');
  if (parts.length !== 4 || parts[0] !== 'dk1') throw new Error('not a doorkeeper token');
  const sized = (s, n) => { const b = b32decode(s); if (b.length !== n) throw new Error('token part of wrong size'); return b; };
  sized(parts[1], 10);
  return { tokenId: parts[1], secret: sized(parts[2], 20), hubFingerprint: sized(parts[3], 32) };
}
const tokenSecretHash = (secret) => sha256(Buffer.from('doorkeeper/v1/token\0'), secret);

// ------------------------------------------------------------------ state digest (section 13)

function stateDigest(configHash, persons /* [[id, recordHash]] sorted by id bytes */) {
  const parts = [Buffer.from('doorkeeper/v1/state\0'), u32be(configHash.length), configHash];
  for (const [id, rh] of persons) { const raw = Buffer.from(id, 'utf8'); parts.push(u32be(raw.length), raw, rh); }
  parts.push(u64be(persons.length));
  return sha256(...parts);
}
function sortedById(entries) {
  return entries.slice().sort((a, b) => Buffer.compare(Buffer.from(a[0], 'utf8'), Buffer.from(b[0], 'utf8')));
}

// ------------------------------------------------------------------ credentials (section 12.2)

// libsodium-wrappers' crypto_generichash_blake2b_salt_personal hashes no input (it is the KDF
// form), so call the C function of the wasm module directly.
function blake2bPersonal(data, key, personal) {
  const lib = sodium.libsodium;
  const person = Buffer.alloc(16); Buffer.from(personal, 'utf8').copy(person);
  const alloc = (bytes) => { const p = lib._malloc(Math.max(bytes.length, 1)); lib.HEAPU8.set(bytes, p); return p; };
  const out = lib._malloc(32), inp = alloc(data), k = alloc(key), pers = alloc(person);
  try {
    if (lib._crypto_generichash_blake2b_salt_personal(out, 32, inp, data.length, 0, k, key.length, 0, pers) !== 0) {
      throw new Error('blake2b failed');
    }
    return Buffer.from(lib.HEAPU8.subarray(out, out + 32));
  } finally { for (const p of [out, inp, k, pers]) lib._free(p); }
}
function cardHash(salt, card) {
  if (!/^[0-9A-Za-z]{4,64}$/.test(card)) throw new Error('card number must be 4-64 ASCII letters or digits');
  return blake2bPersonal(Buffer.from(card.toUpperCase(), 'ascii'), salt, 'dk-card');
}
function pinHash(salt, pin) {
  if (!/^[0-9]{4,12}$/.test(pin)) throw new Error('PIN must be 4-12 digits');
  return blake2bPersonal(Buffer.from(pin, 'ascii'), salt, 'dk-pin');
}

// ------------------------------------------------------------------ templates (section 12.1)

function f16(bits) {
  const s = bits & 0x8000 ? -1 : 1, e = (bits >> 10) & 0x1f, m = bits & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
function decodeTemplate(t) {
  if (t.dim !== 512) throw new Error('template dim must be 512');
  const width = t.encoding === 1 ? 2 : t.encoding === 2 ? 4 : 0;
  if (!width) throw new Error('unknown template encoding');
  const v = Buffer.from(t.vector);
  if (v.length !== t.dim * width) throw new Error('template vector has the wrong length');
  const out = new Float64Array(t.dim);
  for (let i = 0; i < t.dim; i++) out[i] = width === 2 ? f16(v.readUInt16LE(2 * i)) : v.readFloatLE(4 * i);
  let norm = 0;
  for (const x of out) { if (!Number.isFinite(x)) throw new Error('non-finite template'); norm += x * x; }
  norm = Math.sqrt(norm);
  if (!norm) throw new Error('zero template');
  return out.map((x) => x / norm);
}

// ------------------------------------------------------------------ key wrapping, chunks (10, 11)

function unwrapKey(wrapped, hubBoxPublic, deviceBox) {
  const w = Buffer.from(wrapped);
  const key = sodium.crypto_box_open_easy(w.subarray(24), w.subarray(0, 24), hubBoxPublic, deviceBox.secretKey);
  if (key.length !== 32) throw new Error('content key has the wrong size');
  return Buffer.from(key);
}
function decryptChunk(contentKey, data) {
  const d = Buffer.from(data);
  return Buffer.from(sodium.crypto_secretbox_open_easy(d.subarray(24), d.subarray(0, 24), contentKey));
}

// ------------------------------------------------------------------ entry log (15, 16, 17)

const GENESIS = Buffer.alloc(32);
const chainValue = (recordBytes) => sha256(Buffer.from('doorkeeper/v1/log-chain\0'), recordBytes);
function linkOut(record, recordBytes) {
  if (record.kind === 2 && record.gap_dropped && record.link_hash.length) return Buffer.from(record.link_hash);
  return chainValue(recordBytes);
}
const EXPORT_MAGIC = Buffer.from('DKLOGS\0\x01', 'latin1');
function readExport(bytes) {
  const b = Buffer.from(bytes);
  if (!equal(b.subarray(0, 8), EXPORT_MAGIC)) throw new Error('bad export magic');
  const frames = [];
  let pos = 8;
  while (pos < b.length) {
    const n = b.readUInt32BE(pos);
    if (n > 4 * 1024 * 1024) throw new Error('export frame too large');
    frames.push(decode('LogExportFrame', b.subarray(pos + 4, pos + 4 + n)));
    pos += 4 + n;
  }
  return frames;
}

module.exports = {
  ready, root, type, encode, decode, enumValue, hex, unhex, sha256, u32be, u64be, equal,
  signKeypair, boxKeypair, fingerprint, keyId, fingerprintText, b32encode, b32decode,
  frame, sign, verify, parseToken, tokenSecretHash, stateDigest, sortedById,
  cardHash, pinHash, decodeTemplate, unwrapKey, decryptChunk, GENESIS, chainValue, linkOut,
  readExport, get sodium() { return sodium; },
};
