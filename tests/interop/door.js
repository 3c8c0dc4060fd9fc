// A door terminal in Node.js, from protos/PROTOCOL.md: register, sync, report, upload logs,
// and refuse tampered input. Each subcommand prints one JSON line on stdout (watch-apply two:
// one once its stream is open, one at the end).
//
//   node door.js register --hub HOST:PORT --token TOKEN --data DIR
//   node door.js sync     --data DIR [--snapshot]
//   node door.js watch-apply --data DIR [--wait S] [--claim-version V] [--flip-inline-chunk]
//   node door.js report   --data DIR
//   node door.js logs     --data DIR
//   node door.js tamper   --data DIR
//
// State lives in DIR/door.json (keys in the clear: this is a test client, not a door).
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const w = require('./wire');
const core = require('./bundle');

const PROTO = path.resolve(__dirname, '..', '..', 'protos', 'doorkeeper', 'v1', 'doorkeeper.proto');
const services = protoLoader.loadSync(PROTO, { keepCase: true });
const SYNC = services['doorkeeper.v1.DeviceSync'];
const MiB = 1024 * 1024;

// Section 19: 4 MiB messages both ways; keepalive no more often than the hub permits.
const CLIENT_OPTIONS = {
  'grpc.max_receive_message_length': 4 * MiB,
  'grpc.max_send_message_length': 4 * MiB,
  'grpc.keepalive_time_ms': 20000,
  'grpc.keepalive_timeout_ms': 10000,
  'grpc.keepalive_permit_without_calls': 1,
};

function args() {
  const out = { _: process.argv[2] };
  for (let i = 3; i < process.argv.length; i++) {
    const a = process.argv[i];
    if (!a.startsWith('--')) continue;
    const next = process.argv[i + 1];
    if (next === undefined || next.startsWith('--')) out[a.slice(2)] = true;
    else { out[a.slice(2)] = next; i++; }
  }
  return out;
}

// ------------------------------------------------------------------ state

const statePath = (dir) => path.join(dir, 'door.json');
function load(dir) { return JSON.parse(fs.readFileSync(statePath(dir), 'utf8')); }
function save(dir, state) {
  const tmp = statePath(dir) + '.tmp';
  fs.writeFileSync(tmp, JSON.stringify(state, null, 1));
  fs.renameSync(tmp, statePath(dir));
}
function identity(state) {
  return {
    sign: w.signKeypair(w.unhex(state.device_sign_seed)),
    box: w.boxKeypair(w.unhex(state.device_box_secret)),
  };
}
function trustOf(state) {
  const id = identity(state);
  return { hubSignKey: w.unhex(state.hub_sign_key), hubBoxKey: w.unhex(state.hub_box_key),
    siteId: state.site_id, deviceId: state.device_id, deviceBox: id.box };
}

// ------------------------------------------------------------------ transport (sections 6, 19)

class Hub {
  constructor(address) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure(), CLIENT_OPTIONS);
    this.calls = {}; // signed calls made, by method: what the door's output says it did
  }
  close() { this.client.close(); }

  unary(method, request, metadata = new grpc.Metadata(), timeoutS = 10) {
    const path = SYNC[method].path;
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(path, (x) => x, (x) => x, request, metadata,
        { deadline: Date.now() + timeoutS * 1000 }, (err, res) => (err ? reject(err) : resolve(res)));
    });
  }

  async signedMetadata(state, method, request) {
    this.calls[method] = (this.calls[method] || 0) + 1;
    const challenge = w.decode('ChallengeResponse',
      await this.unary('Challenge', w.encode('ChallengeRequest', { principal: state.device_id })));
    const id = identity(state);
    const signature = w.sign(id.sign, 'call', SYNC[method].path, state.device_id, challenge.nonce, w.sha256(request));
    const md = new grpc.Metadata();
    md.set('x-dk-principal', state.device_id);
    md.set('x-dk-nonce', w.hex(challenge.nonce));
    md.set('x-dk-signature', w.hex(signature));
    return md;
  }

  async signed(state, method, request, timeoutS = 10) {
    return this.unary(method, request, await this.signedMetadata(state, method, request), timeoutS);
  }

  async signedStream(state, method, request, timeoutS) {
    const md = await this.signedMetadata(state, method, request);
    return this.client.makeServerStreamRequest(SYNC[method].path, (x) => x, (x) => x, request, md,
      { deadline: Date.now() + timeoutS * 1000 });
  }
}

function status(err) { return { code: grpc.status[err.code] || String(err.code), details: err.details }; }

// ------------------------------------------------------------------ registration (section 5)

async function register(a) {
  await w.ready();
  const token = w.parseToken(a.token);
  fs.mkdirSync(a.data, { recursive: true });
  const sign = w.signKeypair(Buffer.from(w.sodium.randombytes_buf(32)));
  const box = w.boxKeypair(Buffer.from(w.sodium.randombytes_buf(32)));
  const hub = new Hub(a.hub);
  try {
    const hubChallenge = Buffer.from(w.sodium.randombytes_buf(32));
    const hello = w.decode('ChallengeResponse',
      await hub.unary('Challenge', w.encode('ChallengeRequest', { hub_challenge: hubChallenge })));
    const hubSign = Buffer.from(hello.hub_sign_key), hubBox = Buffer.from(hello.hub_box_key);
    if (!w.equal(w.fingerprint(hubSign), token.hubFingerprint)) throw new Error('hub key is not the one the token names');
    if (hubBox.length !== 32 || !w.verify(hubSign, hello.hub_proof, 'hub-proof', hubChallenge, hubSign, hubBox)) {
      throw new Error('hub did not prove its key; token not sent');
    }
    const request = w.encode('RegisterRequest', {
      token_id: token.tokenId,
      sealed_token_secret: Buffer.from(w.sodium.crypto_box_seal(token.secret, hubBox)),
      device_sign_key: sign.publicKey, device_box_key: box.publicKey,
      proof: w.sign(sign, 'register', token.tokenId, sign.publicKey, box.publicKey),
    });
    const r = w.decode('RegisterResponse', await hub.unary('Register', request));
    if (!w.equal(r.hub_sign_key, hubSign) || !w.equal(r.hub_box_key, hubBox) ||
        !w.verify(hubSign, r.hub_signature, 'registered', r.device_id, sign.publicKey, box.publicKey, hubBox)) {
      throw new Error('registration answer not signed by the pinned key');
    }
    const state = {
      hub: a.hub, device_id: r.device_id, site_id: r.site_id, device_sign_seed: w.hex(sign.seed),
      device_box_secret: w.hex(box.secretKey), hub_sign_key: w.hex(hubSign), hub_box_key: w.hex(hubBox),
      whitelist: core.emptyWhitelist(), log: { seq: 0, head: w.hex(w.GENESIS) },
    };
    save(a.data, state);
    // The first signed call completes the registration and spends the token.
    const manifest = w.encode('Manifest', { site_id: r.site_id, device_id: r.device_id });
    await hub.signed(state, 'Report', w.encode('SignedManifest', { manifest, signature: w.sign(sign, 'manifest', manifest) }));
    return { device_id: r.device_id, site_id: r.site_id, site_name: r.site_name, hub_key: w.fingerprintText(hubSign) };
  } finally { hub.close(); }
}

// ------------------------------------------------------------------ fetch (sections 8-13)

function readStream(call) {
  return new Promise((resolve, reject) => {
    const parts = [];
    call.on('data', (buf) => parts.push(w.decode('BundlePart', buf)));
    call.on('error', reject);
    call.on('end', () => resolve(parts));
  });
}

async function fetchParts(hub, state, wantSnapshot) {
  const nonce = Buffer.from(w.sodium.randombytes_buf(32));
  const request = w.encode('FetchRequest', { current_version: state.whitelist.version, want_snapshot: !!wantSnapshot, nonce });
  return { nonce, parts: await readStream(await hub.signedStream(state, 'Fetch', request, 600)) };
}

// The bundle a WatchEvent carries, as the parts of a Fetch answer (section 7: header, then
// every chunk in order), so that it goes through applyParts like a fetched one.
function eventParts(event) {
  return [{ part: 'header', header: event.header }, ...event.chunks.map((chunk) => ({ part: 'chunk', chunk }))];
}

// Verify and apply what a Fetch (or a watch event) brought; returns the new state (the old one
// is untouched on refusal). inlineCap: set for a bundle that came on the watch stream, the most
// chunk bytes the door asked for; such a bundle must also be a delta (section 7).
function applyParts(state, parts, nonce, resync, inlineCap = null) {
  let trust = trustOf(state);
  let header = null;
  const chunks = [];
  for (const part of parts) {
    if (part.part === 'rotation') {
      const next = core.followRotation(part.rotation, trust);
      if (next) { trust = next; state = { ...state, hub_sign_key: w.hex(next.hubSignKey) }; }
    } else if (part.part === 'up_to_date') {
      const beacon = core.verifyBeacon(part.up_to_date, trust);
      if (!w.equal(beacon.nonce, nonce)) throw new core.BundleError('Unproven', 'up_to_date does not echo our nonce');
      return { state, outcome: 'up_to_date' };
    } else if (part.part === 'header') {
      header = core.verifyHeader(part.header, trust, state.whitelist.version, Date.now() / 1000, resync);
      if (!w.equal(header.nonce, nonce)) throw new core.BundleError('Unproven', 'header does not echo our nonce');
      if (inlineCap !== null && header.payload_length > inlineCap) throw new core.BundleError('Oversized', `${header.payload_length} bytes, asked for ${inlineCap}`);
      if (inlineCap !== null && header.kind !== core.DELTA) throw new core.BundleError('NotADelta', 'only deltas come on the watch stream');
    } else if (part.part === 'chunk') {
      if (!header) throw new core.BundleError('Truncated', 'chunk before header');
      if (part.chunk.index !== chunks.length) throw new core.BundleError('Truncated', 'chunk out of order');
      core.checkChunk(header, part.chunk.index, Buffer.from(part.chunk.data));
      chunks.push(Buffer.from(part.chunk.data));
    }
  }
  if (!header) throw new core.BundleError('Truncated', 'no header');
  if (chunks.length !== header.chunk_length.length) throw new core.BundleError('Truncated', 'stream ended early');
  const whitelist = core.apply(state.whitelist, header, chunks, trust);
  return { state: { ...state, whitelist }, outcome: header.kind === core.SNAPSHOT ? 'snapshot' : 'delta', header };
}

async function report(hub, state) {
  const nonce = Buffer.from(w.sodium.randombytes_buf(32));
  const wl = state.whitelist;
  const manifest = w.encode('Manifest', {
    site_id: state.site_id, device_id: state.device_id, version: wl.version, state_digest: w.unhex(wl.digest),
    person_count: Object.keys(wl.persons).length, device_time: Math.floor(Date.now() / 1000),
    agent_version: 'node-interop/1', beacon_nonce: nonce,
  });
  const signedManifest = w.encode('SignedManifest', { manifest, signature: w.sign(identity(state).sign, 'manifest', manifest) });
  const r = w.decode('ReportResponse', await hub.signed(state, 'Report', signedManifest));
  const beacon = core.verifyBeacon(r.beacon, trustOf(state));
  return { in_sync: r.in_sync, hub_version: r.hub_version, resync: r.resync, fresh: w.equal(beacon.nonce, nonce) };
}

async function fetchAndApply(hub, state, wantSnapshot) {
  const { nonce, parts } = await fetchParts(hub, state, wantSnapshot);
  return applyParts(state, parts, nonce, !!wantSnapshot);
}

// After a bundle applied (fetched or on the stream): keep the state, report, say what the door holds.
async function settle(a, hub, state) {
  save(a.data, state);
  const r = await report(hub, state);
  const persons = Object.values(state.whitelist.persons).map((p) => w.decode('PersonRecord', w.unhex(p)));
  return { version: state.whitelist.version, digest: state.whitelist.digest,
    hub_key: w.fingerprintText(w.unhex(state.hub_sign_key)),
    persons: persons.length, templates: persons.reduce((n, p) => n + p.templates.length, 0),
    card_hashes: persons.flatMap((p) => p.card_hashes.map(w.hex)), report: r };
}

async function sync(a) {
  await w.ready();
  const state = load(a.data);
  const hub = new Hub(state.hub);
  try {
    const result = await fetchAndApply(hub, state, a.snapshot);
    return { outcome: result.outcome, ...(await settle(a, hub, result.state)) };
  } finally { hub.close(); }
}

// ------------------------------------------------------------------ bundles on the stream (section 7)

const INLINE_BUNDLE_BYTES = 65536;

// The events of a server stream one at a time, each awaited until a deadline.
function eventReader(call, messageName) {
  const queue = [];
  let waiter = null, failure = null;
  const wake = () => { if (waiter) { const resume = waiter; waiter = null; resume(); } };
  call.on('data', (buf) => { queue.push(w.decode(messageName, buf)); wake(); });
  call.on('error', (err) => { failure = failure || err; wake(); });
  call.on('end', () => { failure = failure || new Error('the hub ended the watch stream'); wake(); });
  return async (deadline, what) => {
    while (!queue.length && !failure && Date.now() < deadline) {
      await new Promise((resolve) => {
        const timer = setTimeout(() => { waiter = null; resolve(); }, deadline - Date.now());
        waiter = () => { clearTimeout(timer); resolve(); };
      });
    }
    if (queue.length) return queue.shift();
    throw failure || new Error(`no ${what} before the deadline`);
  };
}

// What a bundle's header claims, unverified: only for saying what was refused.
function claims(signed) {
  try {
    const h = w.decode('BundleHeader', signed.header);
    return { from_version: h.from_version, to_version: h.to_version };
  } catch (err) {
    return { from_version: null, to_version: null, unreadable: String(err.message || err) };
  }
}

// Watch with inline bundles; print a line once the stream is open; on the first event naming a
// newer version, apply the bundle it carries exactly as a fetched one, or fall back to Fetch.
async function watchApply(a) {
  await w.ready();
  const state = load(a.data);
  const held = state.whitelist.version;
  // --claim-version: tell the hub another version than the one held (the door then must not
  // apply a bundle that does not start at what it holds).
  const claimed = a['claim-version'] === undefined ? held : Number(a['claim-version']);
  const waitS = Number(a.wait || 60);
  const hub = new Hub(state.hub);
  try {
    const nonce = Buffer.from(w.sodium.randombytes_buf(32));
    const request = w.encode('WatchRequest', { current_version: claimed, nonce, inline_bundle_bytes: INLINE_BUNDLE_BYTES });
    const call = await hub.signedStream(state, 'Watch', request, waitS + 30);
    const next = eventReader(call, 'WatchEvent');
    const deadline = Date.now() + waitS * 1000;
    let event = null, beacon = null, events = 0;
    while (!event) {
      const e = await next(deadline, 'event naming a newer version');
      const b = core.verifyBeacon(e.beacon, trustOf(state));
      if (!w.equal(b.nonce, nonce)) throw new Error('a watch beacon does not echo the stream nonce');
      if (events++ === 0) console.log(JSON.stringify({ watching: true, version: held, claimed }));
      if (b.version > held) { event = e; beacon = b; }
    }
    call.cancel();
    let result = null, stream = null;
    if (event.header) {
      stream = { ...claims(event.header), chunks: event.chunks.length };
      if (a['flip-inline-chunk'] && event.chunks.length) {
        const data = Buffer.from(event.chunks[0].data); data[data.length - 1] ^= 1;
        event.chunks[0] = { ...event.chunks[0], data };
      }
      try {
        result = applyParts(state, eventParts(event), nonce, false, INLINE_BUNDLE_BYTES);
        stream.applied = true;
      } catch (err) {
        if (!(err instanceof core.BundleError)) throw err;
        // Section 7: ignore it, change nothing, fetch as if the beacon came alone (no snapshot
        // request: only what the Fetch answers counts as a refusal).
        stream.refused = err.kind;
      }
    }
    let fetched = null;
    if (!result) {
      result = await fetchAndApply(hub, state, false);
      fetched = { outcome: result.outcome, from_version: result.header ? result.header.from_version : null };
    }
    return { beacon_version: beacon.version, stream_bundle: stream, fetched, outcome: result.outcome,
      ...(await settle(a, hub, result.state)), calls: hub.calls };
  } finally { hub.close(); }
}

// A watch stream's first beacon must echo the stream's nonce (section 7).
async function watchOnce(hub, state) {
  const nonce = Buffer.from(w.sodium.randombytes_buf(32));
  const call = await hub.signedStream(state, 'Watch', w.encode('WatchRequest', { current_version: state.whitelist.version, nonce }), 30);
  const event = await new Promise((resolve, reject) => {
    call.on('data', (buf) => resolve(w.decode('WatchEvent', buf)));
    call.on('error', reject);
  });
  call.cancel();
  const beacon = core.verifyBeacon(event.beacon, trustOf(state));
  return { version: beacon.version, fresh: w.equal(beacon.nonce, nonce), digest: w.hex(beacon.state_digest) };
}

async function reportCmd(a) {
  await w.ready();
  const state = load(a.data);
  const hub = new Hub(state.hub);
  try { return { watch: await watchOnce(hub, state), report: await report(hub, state) }; } finally { hub.close(); }
}

// ------------------------------------------------------------------ entry logs (sections 15, 16)

function ownerKey(state) {
  const config = w.decode('SiteConfig', w.unhex(state.whitelist.config));
  if (config.log_owner_public_key.length !== 32) throw new Error('site has no log owner key');
  return { publicKey: Buffer.from(config.log_owner_public_key), keyId: config.log_owner_key_id };
}

function nextRecord(state, fields) {
  const seq = state.log.seq + 1;
  const raw = w.encode('SealedLogRecord', { seq, prev_hash: w.unhex(state.log.head), gap_from_seq: seq, ...fields(seq) });
  state.log = { seq, head: w.hex(w.linkOut(w.decode('SealedLogRecord', raw), raw)) };
  return raw;
}

function entryRecord(state, owner, entry) {
  return nextRecord(state, (seq) => {
    const plain = w.encode('LogEntry', { device_id: state.device_id, seq, ...entry });
    return { kind: 1, owner_key_id: owner.keyId, ciphertext: Buffer.from(w.sodium.crypto_box_seal(plain, owner.publicKey)) };
  });
}

function signedBatch(state, records, extra = {}) {
  const first = w.decode('SealedLogRecord', records[0]), last = w.decode('SealedLogRecord', records[records.length - 1]);
  const batch = w.encode('LogBatch', { device_id: state.device_id, site_id: state.site_id, first_seq: first.gap_from_seq,
    last_seq: last.seq, records, sent_at_ms: Date.now(), ...extra });
  return w.encode('SignedLogBatch', { batch, signature: w.sign(identity(state).sign, 'log-batch', batch) });
}

async function logs(a) {
  await w.ready();
  const state = load(a.data);
  const owner = ownerKey(state);
  const hub = new Hub(state.hub);
  try {
    const t = Date.now();
    const first = [
      entryRecord(state, owner, { wall_time_ms: t, monotonic_ns: 1000, door: 'front', decision: 'granted',
        credential: 'card', person_id: Object.keys(state.whitelist.persons)[0], whitelist_version: state.whitelist.version }),
      entryRecord(state, owner, { wall_time_ms: t + 1, monotonic_ns: 2000, door: 'front', decision: 'denied',
        credential: 'pin', reason: 'unknown_pin', whitelist_version: state.whitelist.version }),
    ];
    const second = [
      nextRecord(state, () => ({ kind: 2, gap_unwritten: 2, gap_reason: 'node_interop_gap' })),
      entryRecord(state, owner, { wall_time_ms: t + 2, monotonic_ns: 3000, door: 'front', decision: 'unknown_face',
        credential: 'face', similarity: 0.25, has_liveness: true, liveness: 0.5, whitelist_version: state.whitelist.version }),
    ];
    const acks = [];
    for (const [records, extra] of [[first, { backlog: 2 }], [second, { unwritten_total: 2 }]]) {
      acks.push(w.decode('LogAck', await hub.signed(state, 'UploadLogs', signedBatch(state, records, extra))));
    }
    // Resending the first batch changes nothing: idempotent on (device, seq).
    acks.push(w.decode('LogAck', await hub.signed(state, 'UploadLogs', signedBatch(state, first))));
    save(a.data, state);
    return { acks, seq: state.log.seq };
  } finally { hub.close(); }
}

// ------------------------------------------------------------------ refusals

async function expectStatus(promise, code) {
  try { await promise; } catch (err) {
    if (grpc.status[err.code] === code) return status(err);
    throw new Error(`expected ${code}, got ${grpc.status[err.code]}: ${err.details}`);
  }
  throw new Error(`expected ${code}, the hub accepted`);
}

async function tamper(a) {
  await w.ready();
  const state = load(a.data);
  const before = fs.readFileSync(statePath(a.data));
  const hub = new Hub(state.hub);
  const refused = {};
  try {
    const { nonce, parts } = await fetchParts(hub, state, false);
    if (!parts.some((p) => p.part === 'header')) throw new Error('expected a bundle to tamper with');
    const flip = (buf) => { const b = Buffer.from(buf); b[b.length - 1] ^= 1; return b; };
    const variants = {
      chunk: parts.map((p) => (p.part === 'chunk' && p.chunk.index === 0 ? { ...p, chunk: { ...p.chunk, data: flip(p.chunk.data) } } : p)),
      header: parts.map((p) => (p.part === 'header' ? { ...p, header: { ...p.header, header: flip(p.header.header) } } : p)),
      signature: parts.map((p) => (p.part === 'header' ? { ...p, header: { ...p.header, signature: flip(p.header.signature) } } : p)),
      replayed_nonce: parts,
    };
    for (const [name, variant] of Object.entries(variants)) {
      const useNonce = name === 'replayed_nonce' ? Buffer.alloc(32, 7) : nonce;
      try { applyParts(state, variant, useNonce, false); throw new Error(`tampered ${name} was accepted`); } catch (err) {
        if (!(err instanceof core.BundleError)) throw err;
        refused[name] = err.kind;
      }
    }
    if (!fs.readFileSync(statePath(a.data)).equals(before)) throw new Error('state changed by a refused bundle');
    // The hub refuses a call whose bytes changed after signing, and a batch with a broken chain.
    const request = w.encode('FetchRequest', { current_version: state.whitelist.version, nonce });
    const md = await hub.signedMetadata(state, 'Fetch', request);
    const altered = w.encode('FetchRequest', { current_version: 0, want_snapshot: true, nonce });
    refused.altered_call = await expectStatus(readStream(hub.client.makeServerStreamRequest(SYNC.Fetch.path, (x) => x, (x) => x,
      altered, md, { deadline: Date.now() + 10000 })), 'UNAUTHENTICATED');
    const forked = { ...state, log: { seq: state.log.seq, head: w.hex(Buffer.alloc(32, 9)) } };
    const owner = ownerKey(state);
    const record = entryRecord(forked, owner, { door: 'front', decision: 'granted', credential: 'card' });
    refused.broken_chain = await expectStatus(hub.signed(state, 'UploadLogs', signedBatch(state, [record])), 'INVALID_ARGUMENT');
    return { refused, state_unchanged: true };
  } finally { hub.close(); }
}

const COMMANDS = { register, sync, 'watch-apply': watchApply, report: reportCmd, logs, tamper };

(async () => {
  const a = args();
  const cmd = COMMANDS[a._];
  if (!cmd) { console.error(`usage: node door.js ${Object.keys(COMMANDS).join('|')} --data DIR ...`); process.exit(2); }
  try {
    console.log(JSON.stringify(await cmd(a)));
  } catch (err) {
    console.error(err.code !== undefined && err.details !== undefined ? `${grpc.status[err.code]}: ${err.details}` : (err.stack || String(err)));
    process.exit(1);
  }
})();
