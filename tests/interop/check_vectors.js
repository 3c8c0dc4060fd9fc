// Checks every known-answer vector in protos/vectors/ with this implementation.
// Usage: node check_vectors.js [VECTORS_DIR]. Exit status 0 when all pass.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const assert = require('node:assert/strict');
const w = require('./wire');
const core = require('./bundle');

const dir = process.argv[2] || path.resolve(__dirname, '..', '..', 'protos', 'vectors');
const load = (name) => JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'));
const b = w.unhex;
let checks = 0;
const ok = (cond, what) => { assert.ok(cond, what); checks++; };
const same = (a, e, what) => { assert.equal(w.hex(a), typeof e === 'string' ? e : w.hex(e), what); checks++; };

function partsOf(parts) { return parts.map((p) => ('u64' in p ? p.u64 : 'str' in p ? p.str : b(p.hex))); }

function signatures(node, out = []) {
  if (Array.isArray(node)) node.forEach((n) => signatures(n, out));
  else if (node && typeof node === 'object') {
    if ('context' in node && 'parts' in node && 'message' in node && 'signature' in node) out.push(node);
    Object.values(node).forEach((n) => signatures(n, out));
  }
  return out;
}

async function main() {
  await w.ready();
  const keys = load('keys.json'), reg = load('registration.json'), bun = load('bundle.json'), logs = load('entrylog.json');
  const parties = {};
  // Section 2: keys, key ids, fingerprints.
  for (const [name, p] of Object.entries(keys.parties)) {
    if (name === 'owner') {
      same(w.boxKeypair(b(p.box_secret)).publicKey, p.box_public, 'owner public');
      ok(w.keyId(b(p.box_public)) === p.key_id, 'owner key id');
      continue;
    }
    const sk = w.signKeypair(b(p.sign_seed)), bx = w.boxKeypair(b(p.box_secret));
    same(sk.publicKey, p.sign_public, `${name} sign public`);
    same(bx.publicKey, p.box_public, `${name} box public`);
    same(w.fingerprint(sk.publicKey), p.fingerprint, `${name} fingerprint`);
    ok(w.keyId(sk.publicKey) === p.key_id, `${name} key id`);
    ok(w.fingerprintText(sk.publicKey) === p.fingerprint_text, `${name} fingerprint text`);
    parties[name] = { sign: sk, box: bx };
  }
  // Section 3: every signature, re-made byte for byte (Ed25519 is deterministic).
  const all = [keys, reg, bun, logs].flatMap((v) => signatures(v));
  const contexts = new Set();
  for (const s of all) {
    const parts = partsOf(s.parts);
    same(w.frame(s.context, parts), s.message, `framing of ${s.context}`);
    same(w.sign(parties[s.signer].sign, s.context, ...parts), s.signature, `signature ${s.context}`);
    ok(w.verify(parties[s.signer].sign.publicKey, b(s.signature), s.context, ...parts), `verify ${s.context}`);
    ok(!w.verify(parties[s.signer].sign.publicKey, b(s.signature), s.context + 'x', ...parts), 'context binds');
    contexts.add(s.context);
  }
  for (const c of ['hub-proof', 'register', 'registered', 'call', 'beacon', 'bundle-header', 'manifest', 'log-batch', 'key-rotation']) {
    ok(contexts.has(c), `a vector for context ${c}`);
  }
  // Section 4: token.
  const t = w.parseToken(keys.token.text);
  ok(t.tokenId === keys.token.token_id, 'token id');
  same(t.secret, keys.token.secret, 'token secret');
  same(t.hubFingerprint, keys.token.hub_fingerprint, 'token fingerprint');
  same(w.tokenSecretHash(t.secret), keys.token.secret_hash, 'token secret hash');
  ok('SHA256:' + w.b32encode(t.hubFingerprint) === keys.token.hub_fingerprint_text, 'token fingerprint text');
  ok(`dk1-${t.tokenId}-${w.b32encode(t.secret)}-${w.b32encode(t.hubFingerprint)}` === keys.token.text, 'token re-made');
  // Section 6: a signed call.
  const call = keys.signed_call;
  same(w.sha256(b(call.request)), call.request_sha256, 'request sha256');
  const callSig = w.sign(parties.device.sign, 'call', call.method, call.principal, b(call.nonce), w.sha256(b(call.request)));
  same(callSig, call.signature, 'call signature');
  assert.deepEqual(call.metadata, [['x-dk-principal', call.principal], ['x-dk-nonce', call.nonce], ['x-dk-signature', call.signature]]);
  const fetch = w.decode('FetchRequest', b(call.request));
  ok(fetch.current_version === 3, 'request decodes');
  // Section 5: the sealed token secret (re-derived from the ephemeral key, then opened).
  const st = reg.sealed_token_secret;
  const esk = b(st.ephemeral_secret), epk = w.boxKeypair(esk).publicKey, hubBox = b(st.recipient_box_public);
  const nonce = Buffer.from(w.sodium.crypto_generichash(24, Buffer.concat([epk, hubBox])));
  same(nonce, st.nonce, 'sealed box nonce');
  same(Buffer.concat([epk, w.sodium.crypto_box_easy(b(st.plaintext), nonce, hubBox, esk)]), st.sealed, 'sealed box');
  same(w.sodium.crypto_box_seal_open(b(st.sealed), hubBox, b(st.recipient_box_secret)), st.plaintext, 'unseal');
  // Sections 10-13: records, templates, credentials, bundles, digests.
  const rec = bun.records;
  const salt = b(rec.credentials.salt);
  for (const c of rec.credentials.cards) same(w.cardHash(salt, c.input), c.hash, `card ${c.input}`);
  for (const p of rec.credentials.pins) same(w.pinHash(salt, p.input), p.hash, `pin ${p.input}`);
  for (const tv of rec.templates) {
    const tpl = w.decode('Template', b(tv.wire));
    ok(tpl.model_id === tv.model_id && tpl.encoding === 1, 'template header');
    same(tpl.vector, tv.vector_f16le, 'template vector');
    const got = w.decodeTemplate(tpl), ref = b(tv.normalised_f32le);
    let dot = 0;
    for (let i = 0; i < 512; i++) dot += got[i] * ref.readFloatLE(4 * i);
    ok(dot > 0.999, `template decodes (cosine ${dot})`);
  }
  same(w.sha256(b(rec.site_config)), bun.config_hash, 'config hash');
  for (const [id, r] of Object.entries(bun.person_records)) same(w.sha256(b(r)), bun.record_hashes[id], `record hash ${id}`);
  same(w.stateDigest(Buffer.alloc(0), []), bun.state_digest_empty, 'empty digest');
  const hub = parties.hub, device = parties.device;
  const wrap = bun.wrap_example;
  const wrapped = Buffer.concat([b(wrap.nonce), w.sodium.crypto_box_easy(b(wrap.content_key), b(wrap.nonce), device.box.publicKey, hub.box.secretKey)]);
  same(wrapped, wrap.wrapped, 'wrapped key');
  const trust = { hubSignKey: hub.sign.publicKey, hubBoxKey: hub.box.publicKey, siteId: bun.site_id, deviceId: bun.device_id, deviceBox: device.box };
  let wl = core.emptyWhitelist();
  const held = {};
  for (const [name, from] of [['snapshot', 0], ['delta', 3]]) {
    held[from] = wl;
    const v = bun[name];
    const signed = w.decode('SignedBundleHeader', b(v.signed_header));
    const h = core.verifyHeader(signed, trust, from, bun.now);
    same(h.nonce, v.fetch_nonce, `${name} nonce echoed`);
    same(w.unwrapKey(h.wrapped_key, trust.hubBoxKey, device.box), v.content_key, `${name} content key`);
    for (const c of v.chunks) {
      same(w.decryptChunk(b(v.content_key), b(c.data)), c.plaintext, `${name} chunk plaintext`);
      same(Buffer.concat([b(c.nonce), w.sodium.crypto_secretbox_easy(b(c.plaintext), b(c.nonce), b(v.content_key))]), c.data, `${name} chunk re-encrypted`);
    }
    same(w.sha256(Buffer.concat(v.chunks.map((c) => b(c.data)))), v.ciphertext_sha256, `${name} ciphertext sha256`);
    wl = core.apply(wl, h, v.chunks.map((c) => b(c.data)), trust);
    ok(wl.digest === bun.state_digests[String(h.to_version)], `${name} digest after apply`);
    // Tampered: one flipped byte in a chunk or the header is refused, the whitelist unchanged.
    const bad = b(v.chunks[0].data); bad[bad.length - 1] ^= 1;
    assert.throws(() => core.apply(core.emptyWhitelist(), h, [bad, ...v.chunks.slice(1).map((c) => b(c.data))], trust), /Truncated/);
    const badHeader = Buffer.from(signed.header); badHeader[badHeader.length - 1] ^= 1;
    assert.throws(() => core.verifyHeader({ header: badHeader, signature: signed.signature }, trust, from, bun.now), /Forged/);
    checks += 2;
  }
  assert.throws(() => core.verifyHeader(w.decode('SignedBundleHeader', b(bun.delta.signed_header)), trust, 4, bun.now), /NothingNew/);
  assert.throws(() => core.verifyHeader(w.decode('SignedBundleHeader', b(bun.snapshot.signed_header)), trust, 4, bun.now), /Rollback/);
  assert.throws(() => core.verifyHeader(w.decode('SignedBundleHeader', b(bun.snapshot.signed_header)), trust, 0, bun.now + 10 ** 6), /Expired/);
  const beacon = core.verifyBeacon({ beacon: b(bun.beacon.parts[0].hex), signature: b(bun.beacon.signature) }, trust);
  ok(beacon.version === 4 && w.hex(beacon.state_digest) === wl.digest, 'beacon names the applied state');
  // Section 7, bundles on the stream: a WatchEvent carrying the delta (header echoing the watch
  // nonce, every chunk in order) applies to version 3 exactly as the fetched delta does.
  const we = bun.watch_event;
  const event = w.decode('WatchEvent', b(we.event));
  const eb = core.verifyBeacon(event.beacon, trust);
  same(eb.nonce, we.watch_nonce, 'watch event beacon echoes the watch nonce');
  ok(eb.version === bun.delta.to_version, 'watch event names the delta\'s version');
  same(w.encode('SignedBundleHeader', event.header), we.signed_header, 'watch event header');
  const sh = core.verifyHeader(event.header, trust, we.from_version, bun.now);
  same(sh.nonce, we.watch_nonce, 'stream header echoes the watch nonce');
  same(sh.wrapped_key, we.wrapped_key, 'stream header wrapped key');
  same(w.unwrapKey(sh.wrapped_key, trust.hubBoxKey, device.box), bun.delta.content_key, 'stream header content key');
  ok(sh.kind === core.DELTA && sh.effective_at === 0 && sh.to_version === eb.version, 'stream header: a delta due now');
  ok(event.chunks.length === bun.delta.chunks.length, 'every chunk on the event');
  event.chunks.forEach((c, i) => { ok(c.index === i, `event chunk ${i} index`); same(c.data, bun.delta.chunks[i].data, `event chunk ${i}`); });
  const streamed = core.apply(held[we.from_version], sh, event.chunks.map((c) => Buffer.from(c.data)), trust);
  ok(streamed.digest === bun.state_digests[String(eb.version)] && streamed.digest === w.hex(eb.state_digest), 'stream delta digest');
  assert.throws(() => core.verifyHeader(event.header, trust, we.from_version - 1, bun.now), /VersionGap/);
  checks++;
  const rot = bun.key_rotation;
  const next = core.followRotation({ rotation: b(rot.parts[0].hex), signature: b(rot.signature) }, trust);
  same(next.hubSignKey, parties['hub-rotated'].sign.publicKey, 'rotation followed');
  ok(core.followRotation({ rotation: b(rot.parts[0].hex), signature: b(rot.signature) }, next) === null, 'rotation from another key skipped');
  // Sections 15-17: entry records, chain, batches, export.
  const owner = keys.parties.owner;
  let head = b(logs.genesis);
  for (const r of logs.records) {
    const raw = b(r.record), record = w.decode('SealedLogRecord', raw);
    same(record.prev_hash, head, `record ${r.seq} prev_hash`);
    ok(record.gap_from_seq >= 1 && record.gap_from_seq <= record.seq, 'gap_from_seq set');
    same(w.chainValue(raw), r.chain_value, `record ${r.seq} chain value`);
    head = w.linkOut(record, raw);
    same(head, r.link_out, `record ${r.seq} link`);
    if (r.entry) {
      same(w.sodium.crypto_box_seal_open(record.ciphertext, b(owner.box_public), b(owner.box_secret)), r.entry, `entry ${r.seq}`);
      const e = w.decode('LogEntry', b(r.entry));
      ok(e.device_id === logs.device_id && e.seq === r.seq, 'entry bound to its record');
    }
  }
  const frames = w.readExport(b(logs.export));
  ok(frames[0].frame === 'device_key' && frames.length === 3, 'export frames');
  for (const [i, bv] of logs.batches.entries()) {
    same(frames[i + 1].batch.batch, bv.batch, `export batch ${i}`);
    ok(w.verify(parties.device.sign.publicKey, b(bv.signature), 'log-batch', b(bv.batch)), `batch ${i} signature`);
    const batch = w.decode('LogBatch', b(bv.batch));
    const recs = batch.records.map((r) => w.decode('SealedLogRecord', r));
    ok(batch.first_seq === recs[0].gap_from_seq && batch.last_seq === recs[recs.length - 1].seq, 'batch bounds');
  }
  console.log(JSON.stringify({ ok: true, checks, contexts: [...contexts].sort() }));
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
