// The gateway's tus 1.0 endpoint driven by the official tus-js-client (npm, pinned in
// package-lock.json) under Node, against the real sockgate and sockgate-file binaries on loopback:
// a 64 MiB upload cut twice mid-PATCH and resumed by new Upload objects from the server's offset,
// with the gateway restarted after the first cut and the file backend after the second; checksums
// (460 for a bad one, nothing kept); termination; expiry. Throughout, the listing never shows the
// unfinished upload and the stored file's sha256 equals the source's.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tus from 'tus-js-client';

import { startCutProxy } from '../lib/cutproxy.mjs';
import { startProgram } from '../lib/procs.mjs';

const MiB = 1 << 20;
// The gateway gathers a PATCH's body into blocks of this size before writing them on (upload_stream.c).
const GATEWAY_BLOCK = 256 * 1024;

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs an Upload to its end: resolves 'success', or the error tus-js-client gave up with. */
function run(upload) {
  return new Promise((resolve) => {
    upload.options.onSuccess = () => resolve('success');
    upload.options.onError = (err) => resolve(err);
    upload.start();
  });
}

/** HEAD of an upload URL: { status, offset }. */
async function headUpload(url) {
  const r = await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
  assert.equal(r.headers.get('tus-resumable'), '1.0.0');
  return { status: r.status, offset: Number(r.headers.get('upload-offset') ?? -1) };
}

/**
 * HEADs url every 50 ms until the server's offset reaches min or 10 s pass; returns the last
 * { status, offset }. After a cut the gateway still hands the bytes it gathered to the file
 * service (and a HEAD meanwhile may find the upload locked): the offset settles a moment later.
 */
async function settledOffset(url, min) {
  const until = Date.now() + 10000;
  for (;;) {
    const h = await headUpload(url);
    if ((h.status === 200 && h.offset >= min) || Date.now() > until) return h;
    await sleep(50);
  }
}

/**
 * Watches the file listing and the file's HEAD every 50 ms (at most 20 minutes) until stop().
 * The upload is never seen unfinished under its name: a listing or HEAD that shows the name
 * with another size or sha256 is a violation whenever it comes, and one that shows the whole
 * file is a violation when it was answered before finalStarted() (the PATCH that can finish it)
 * began; an answer that overlaps that PATCH may rightly show the finished file.
 */
function watchListing(base, name, data, finalStarted) {
  let running = true;
  const want = sha256(data);
  const seen = { violations: [], rounds: 0 };
  const done = (async () => {
    const until = Date.now() + 20 * 60 * 1000;
    while (running && Date.now() < until) {
      try {
        const before = finalStarted();
        const r = await fetch(`${base()}/api/v1/files`);
        if (r.ok) {
          const f = (await r.json()).files.find((x) => x.name === name);
          if (f && (f.size !== data.length || f.sha256 !== want)) seen.violations.push(`listed unfinished: ${JSON.stringify(f)}`);
          else if (f && !before) seen.violations.push('listed before the last PATCH began');
        }
        const before2 = finalStarted();
        const g = await fetch(`${base()}/api/v1/files/${encodeURIComponent(name)}`, { method: 'HEAD' });
        if (g.status === 200 && g.headers.get('etag') !== `"${want}"`) seen.violations.push(`downloadable unfinished: ${g.headers.get('etag')}`);
        else if (g.status === 200 && !before2) seen.violations.push('downloadable before the last PATCH began');
        seen.rounds++;
      } catch {
        // the gateway is being restarted: nothing to see
      }
      await sleep(50);
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      return seen;
    },
  };
}

/** Checks that name is stored with exactly data: size, bytes (by sha256) and the ETag. */
async function checkStored(base, name, data) {
  const r = await fetch(`${base}/api/v1/files/${encodeURIComponent(name)}`);
  assert.equal(r.status, 200);
  const got = Buffer.from(await r.arrayBuffer());
  assert.equal(got.length, data.length);
  assert.equal(sha256(got), sha256(data));
  assert.equal(r.headers.get('etag'), `"${sha256(data)}"`);
  const list = await (await fetch(`${base}/api/v1/files`)).json();
  assert.ok(list.files.some((f) => f.name === name), `${name} is listed once stored`);
}

function tmpDir(tag) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `sockgate-tus-${tag}-`));
}

// 64 MiB through a proxy that cuts the link twice mid-PATCH; restarts of the gateway, then the file backend;
// a second gateway on the same file backend sees the same upload.
async function testResumeAcrossCutsAndRestarts() {
  const dir = tmpDir('resume');
  const root = path.join(dir, 'files');
  const data = crypto.randomBytes(64 * MiB);
  let file = await startProgram('sockgate-file', ['--listen', '127.0.0.1:0', '--root', root]);
  const fileAddr = file.addr;
  let gw = await startProgram('sockgate', ['--listen', '127.0.0.1:0', '--file', fileAddr, '--max-upload', '1G']);
  const proxy = await startCutProxy(gw.port);
  const base = `http://127.0.0.1:${proxy.port}`;
  let finalPatchStarted = false;
  const watch = watchListing(() => base, 'big.bin', data, () => finalPatchStarted);
  const patchOffsets = [];
  let posts = 0;
  const options = {
    endpoint: `${base}/api/v1/uploads/`,
    metadata: { filename: 'big.bin', filetype: 'application/octet-stream' },
    retryDelays: null, // a cut must end this Upload: the next one resumes
    onBeforeRequest(req) {
      if (req.getMethod() === 'PATCH') patchOffsets.push(Number(req.getHeader('Upload-Offset')));
      if (req.getMethod() === 'POST') posts++;
    },
  };
  try {
    // First attempt: the link drops after 20 MiB of request bytes.
    let cut = proxy.cutAfter(20 * MiB);
    const first = new tus.Upload(data, { ...options });
    const err1 = await run(first);
    assert.notEqual(err1, 'success');
    const cutAt1 = await cut;
    assert.ok(first.url, 'the upload was created before the cut');
    assert.equal(posts, 1);

    // The gateway goes away and comes back (on another port, behind the same proxy address).
    assert.equal((await gw.stop()).code, 0);
    gw = await startProgram('sockgate', ['--listen', '127.0.0.1:0', '--file', fileAddr, '--max-upload', '1G']);
    proxy.setTarget(gw.port);
    const h1 = await headUpload(first.url);
    assert.equal(h1.status, 200);
    // Every byte up to the gateway's last block boundary before the cut is kept (in practice all of them).
    assert.ok(h1.offset >= cutAt1 - 1024 - GATEWAY_BLOCK && h1.offset <= cutAt1, `offset ${h1.offset} after a cut at ${cutAt1}`);
    console.log(`cut 1 after ${cutAt1} request bytes; the server kept ${h1.offset}`);

    // Second attempt, a new Upload object from the server's offset, cut again 20 MiB later.
    cut = proxy.cutAfter(20 * MiB);
    const second = new tus.Upload(data, { ...options, uploadUrl: first.url });
    const err2 = await run(second);
    assert.notEqual(err2, 'success');
    const cutAt2 = await cut;
    assert.equal(posts, 1, 'resuming creates nothing new');
    assert.equal(patchOffsets.at(-1), h1.offset, 'the second Upload resumed from the offset HEAD gave');
    // What the gateway gathered before the cut reaches the file service before that stops.
    await settledOffset(first.url, h1.offset + cutAt2 - 1024 - GATEWAY_BLOCK);

    // Now the file backend restarts (same address, same root); the gateway stays.
    assert.equal((await file.stop()).code, 0);
    file = await startProgram('sockgate-file', ['--listen', fileAddr, '--root', root]);
    const h2 = await headUpload(first.url);
    assert.equal(h2.status, 200);
    assert.ok(h2.offset >= h1.offset + cutAt2 - 1024 - GATEWAY_BLOCK, `offset ${h2.offset} after the second cut`);
    console.log(`cut 2 after ${cutAt2} request bytes; the server holds ${h2.offset} of ${data.length}`);

    // A second gateway in front of the same file backend sees the same upload: the gateway keeps no state.
    const other = await startProgram('sockgate', ['--listen', '127.0.0.1:0', '--file', fileAddr]);
    try {
      const id = new URL(first.url).pathname;
      assert.deepEqual(await headUpload(`http://127.0.0.1:${other.port}${id}`), h2);
    } finally {
      await other.stop();
    }

    const third = new tus.Upload(data, {
      ...options,
      uploadUrl: first.url,
      onBeforeRequest(req) {
        options.onBeforeRequest(req);
        // No chunkSize: this PATCH carries the rest, so it is the one that can store the file.
        if (req.getMethod() === 'PATCH') finalPatchStarted = true;
      },
    });
    assert.equal(await run(third), 'success');
    assert.equal(patchOffsets.at(-1), h2.offset);
    assert.equal(posts, 1);
    const seen = await watch.stop();
    assert.ok(seen.rounds > 0);
    assert.deepEqual(seen.violations, [], 'the unfinished upload was visible under its name');
    await checkStored(base, 'big.bin', data);
    assert.equal((await headUpload(first.url)).status, 404, 'a finished upload is a file, not an upload');
  } finally {
    await watch.stop();
    await proxy.close();
    await gw.stop();
    await file.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// Upload-Checksum added by a request hook (tus-js-client sends none itself): a bad one is 460, nothing kept.
async function testChecksum(gwBase) {
  const data = crypto.randomBytes(3 * MiB);
  const chunkSize = MiB;
  let corrupt = true;
  const options = {
    endpoint: `${gwBase}/api/v1/uploads/`,
    metadata: { filename: 'summed.bin' },
    chunkSize,
    retryDelays: null,
    onBeforeRequest(req) {
      if (req.getMethod() !== 'PATCH') return;
      const off = Number(req.getHeader('Upload-Offset'));
      const digest = crypto.createHash('sha256').update(data.subarray(off, off + chunkSize)).digest();
      if (corrupt) digest[0] ^= 1;
      req.setHeader('Upload-Checksum', `sha256 ${digest.toString('base64')}`);
    },
  };
  const bad = new tus.Upload(data, { ...options });
  const err = await run(bad);
  assert.notEqual(err, 'success');
  assert.equal(err.originalResponse.getStatus(), 460);
  assert.equal((await headUpload(bad.url)).offset, 0, 'bytes that failed their checksum are not kept');
  corrupt = false;
  const good = new tus.Upload(data, { ...options, uploadUrl: bad.url });
  assert.equal(await run(good), 'success');
  await checkStored(gwBase, 'summed.bin', data);
}

// abort(true) terminates: the upload is gone (HEAD 404) and never listed.
async function testTermination(gwBase) {
  const data = crypto.randomBytes(8 * MiB);
  let chunks = 0;
  const upload = new tus.Upload(data, {
    endpoint: `${gwBase}/api/v1/uploads/`,
    metadata: { filename: 'cancelled.bin' },
    chunkSize: MiB,
    retryDelays: null,
  });
  const stopped = new Promise((resolve, reject) => {
    upload.options.onChunkComplete = () => {
      chunks++;
      if (chunks === 2) upload.abort(true).then(resolve, reject);
    };
    upload.options.onSuccess = () => reject(new Error('the upload finished before it was cancelled'));
    upload.options.onError = reject;
  });
  upload.start();
  await stopped;
  assert.equal((await headUpload(upload.url)).status, 404);
  const list = await (await fetch(`${gwBase}/api/v1/files`)).json();
  assert.ok(!list.files.some((f) => f.name === 'cancelled.bin'));
  assert.equal((await fetch(`${gwBase}/api/v1/files/cancelled.bin`)).status, 404);
}

// The gateway (with its embedded file backend) killed with SIGKILL mid-PATCH: a new one on the same
// file root continues the upload from what reached the disk, and the stored file is whole.
async function testCrashMidPatch() {
  const dir = tmpDir('crash');
  const root = path.join(dir, 'files');
  const data = crypto.randomBytes(24 * MiB);
  let gw = await startProgram('sockgate', ['--listen', '127.0.0.1:0', '--file-root', root]);
  const proxy = await startCutProxy(gw.port);
  const base = `http://127.0.0.1:${proxy.port}`;
  try {
    const first = new tus.Upload(data, {
      endpoint: `${base}/api/v1/uploads/`,
      metadata: { filename: 'crash.bin' },
      retryDelays: null,
    });
    // The proxy holds the PATCH after 10 MiB, so the gateway is killed mid-body whatever the machine's speed
    // (killed from the client's progress instead, a fast machine had sent all 24 MiB first).
    const held = proxy.holdAfter(10 * MiB);
    const ended = run(first);
    await held;
    const dying = gw;
    gw = null;
    const how = await dying.kill();
    assert.equal(how.signal, 'SIGKILL');
    assert.notEqual(await ended, 'success');
    gw = await startProgram('sockgate', ['--listen', '127.0.0.1:0', '--file-root', root]);
    proxy.setTarget(gw.port);
    const h = await headUpload(first.url);
    assert.equal(h.status, 200, 'the upload outlived the crash');
    assert.ok(h.offset > 0 && h.offset < data.length, `offset ${h.offset} after the crash`);
    console.log(`killed after the client sent 10 MiB; the server kept ${h.offset}`);
    const second = new tus.Upload(data, { uploadUrl: first.url, retryDelays: null });
    assert.equal(await run(second), 'success');
    await checkStored(base, 'crash.bin', data);
  } finally {
    await proxy.close();
    if (gw) await gw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// --upload-expiry 3s: an upload left alone is gone; a client resuming it is told 404. (The file service
// counts whole seconds from the last change's second: 3 s leaves at least 2 for the first PATCH.)
async function testExpiry() {
  const dir = tmpDir('expiry');
  const gw = await startProgram('sockgate', ['--listen', '127.0.0.1:0', '--file-root', path.join(dir, 'files'),
    '--upload-expiry', '3s']);
  const gwBase = `http://127.0.0.1:${gw.port}`;
  try {
    const data = crypto.randomBytes(4 * MiB);
    let expires = null;
    const upload = new tus.Upload(data, {
      endpoint: `${gwBase}/api/v1/uploads/`,
      metadata: { filename: 'late.bin' },
      chunkSize: MiB,
      retryDelays: null,
      onAfterResponse(req, res) {
        if (req.getMethod() === 'PATCH') expires = res.getHeader('Upload-Expires');
      },
    });
    await new Promise((resolve, reject) => {
      upload.options.onChunkComplete = () => upload.abort(false).then(resolve, reject);
      upload.options.onError = reject;
      upload.start();
    });
    assert.ok(expires && !Number.isNaN(Date.parse(expires)), `Upload-Expires is an HTTP date: ${expires}`);
    assert.ok(Math.abs(Date.parse(expires) - Date.now()) < 60000, `Upload-Expires ${expires} is --upload-expiry away`);
    await sleep(4500); // past the expiry
    assert.equal((await headUpload(upload.url)).status, 404);
    const resumed = new tus.Upload(data, { uploadUrl: upload.url, retryDelays: null });
    const err = await run(resumed);
    assert.notEqual(err, 'success');
    assert.match(String(err), /404|unable to resume/);
    assert.equal((await fetch(`${gwBase}/api/v1/files/late.bin`)).status, 404);
  } finally {
    await gw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  let passed = 0;
  const step = async (name, fn) => {
    console.log(`-- ${name}`);
    await fn();
    passed++;
  };
  await step('resume across cuts and restarts (64 MiB)', testResumeAcrossCutsAndRestarts);
  const dir = tmpDir('embedded');
  const gw = await startProgram('sockgate', ['--listen', '127.0.0.1:0', '--file-root', path.join(dir, 'files')]);
  const gwBase = `http://127.0.0.1:${gw.port}`;
  try {
    await step('checksum', () => testChecksum(gwBase));
    await step('termination', () => testTermination(gwBase));
  } finally {
    const how = await gw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    assert.equal(how.code, 0, 'the gateway exits 0 on SIGTERM');
  }
  await step('gateway killed mid-PATCH', testCrashMidPatch);
  await step('expiry', testExpiry);
  console.log(`${passed} passed, 0 failed`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
