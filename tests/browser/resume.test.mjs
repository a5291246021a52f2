// The page's resumable uploads in headless Chromium against the real gateway: a 20 MiB upload
// whose connection a proxy cuts mid-PATCH resumes by itself from the server's offset, and one
// interrupted by a reload of the page resumes when the same file is chosen again. Same bytes both
// times, and the unfinished upload is never listed under its name.

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { startCutProxy } from '../lib/cutproxy.mjs';
import {
  assert, expectNetworkError, hasFailures, runMain, step, stepNoConsoleErrors, watchPage,
} from '../lib/check.mjs';
import { launchChromium } from './lib/chromium.mjs';
import { startGateway } from '../lib/procs.mjs';

const MiB = 1024 * 1024;
const SIZE = 20 * MiB;
// The page's PATCH size (web/tus.js): a resumed PATCH that starts off this grid started where the server was.
const CHUNK = 8 * MiB;
// Upload speed while the reload step runs: slow enough that the reload lands mid-upload.
const SLOW_THROUGHPUT = 2 * MiB;
const DESKTOP = { width: 1280, height: 900 };

function writeRandomFile(file, size) {
  const data = crypto.randomBytes(size);
  fs.writeFileSync(file, data);
  return crypto.createHash('sha256').update(data).digest('hex');
}

async function eventually(fn, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function storedSha(base, name) {
  const r = await fetch(`${base}/api/v1/files`);
  const body = await r.json();
  const f = body.files.find((x) => x.name === name);
  return f ? f.sha256 : null;
}

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sockgate-resume-'));
  const fileRoot = path.join(tmp, 'files');
  const inputs = path.join(tmp, 'inputs');
  fs.mkdirSync(inputs);
  const cut = { name: 'cut.bin', path: path.join(inputs, 'cut.bin') };
  cut.sha256 = writeRandomFile(cut.path, SIZE);
  const reloaded = { name: 'reloaded.bin', path: path.join(inputs, 'reloaded.bin') };
  reloaded.sha256 = writeRandomFile(reloaded.path, SIZE);

  let gw = null;
  let proxy = null;
  let context = null;
  let page = null;
  const patches = [];
  let listedEarly = false;
  try {
    const started = await step('gateway and a cutting proxy start', async () => {
      gw = await startGateway(['--file-root', fileRoot]);
      proxy = await startCutProxy(gw.port);
    });
    if (!started) return;
    const base = `http://127.0.0.1:${proxy.port}`;
    const launched = await step('chromium starts and loads the page through the proxy', async () => {
      context = await launchChromium(path.join(tmp, 'profile'), DESKTOP);
      page = context.pages()[0] || await context.newPage();
      watchPage(page, 'page');
      page.on('request', (req) => {
        if (req.method() === 'PATCH') patches.push({ url: req.url(), offset: Number(req.headers()['upload-offset']) });
      });
      const response = await page.goto(base + '/');
      assert.equal(response.status(), 200);
      await page.locator('#file-list-status').filter({ hasText: /No files stored yet/ }).waitFor({ timeout: 15000 });
    });
    if (!launched) return;

    // The cut PATCH fails with a network error; the page's retry may also meet 409/423 first.
    expectNetworkError('a connection cut mid-PATCH resumes by itself from the server\'s offset', 409, /^\/api\/v1\/uploads\//);
    expectNetworkError('a connection cut mid-PATCH resumes by itself from the server\'s offset', 423, /^\/api\/v1\/uploads\//);
    await step('a connection cut mid-PATCH resumes by itself from the server\'s offset', async () => {
      const cutDone = proxy.cutAfter(12 * MiB);
      await page.locator('#file-input').setInputFiles([cut.path]);
      const item = page.locator(`#uploads li[data-name="${cut.name}"]`);
      await item.waitFor({ timeout: 10000 });
      assert.equal(await item.getAttribute('data-resumable'), 'tus');
      const cutAt = await cutDone;
      if (await storedSha(base, cut.name)) listedEarly = true;
      await eventually(async () => (await item.getAttribute('data-state')) !== 'running', 90000, `${cut.name} finished`);
      assert.equal(await item.getAttribute('data-state'), 'done', await item.textContent());
      // A PATCH off the 8 MiB grid can only start where a HEAD said the server was (Chromium's own
      // resend of a request cut on a reused connection would repeat the offset it had).
      console.log(`  page retries: ${await item.getAttribute('data-retries') || 0}`);
      const offsets = patches.filter((p) => p.url.includes('/api/v1/uploads/')).map((p) => p.offset);
      const resumed = offsets.filter((o) => o % CHUNK !== 0);
      console.log(`  cut after ${cutAt} bytes; PATCH offsets ${offsets.join(', ')}`);
      // Resumed from where the server was (past the first 8 MiB PATCH, off the 8 MiB grid), not from 0.
      assert.ok(resumed.length >= 1 && resumed[0] > CHUNK && resumed[0] <= cutAt, `PATCH offsets ${offsets}`);
      assert.equal(await storedSha(base, cut.name), cut.sha256);
      assert.equal(listedEarly, false, 'the unfinished upload was listed');
      assert.match(await item.locator('.upload-numbers').textContent(), new RegExp(`sha256 ${cut.sha256.slice(0, 12)}`));
    });

    await step('a reload mid-upload offers to resume; the same file chosen again continues', async () => {
      patches.length = 0;
      const cdp = await context.newCDPSession(page);
      await cdp.send('Network.enable');
      await cdp.send('Network.emulateNetworkConditions', {
        offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: SLOW_THROUGHPUT,
      });
      try {
        await page.locator('#file-input').setInputFiles([reloaded.path]);
        const item = page.locator(`#uploads li[data-name="${reloaded.name}"]`);
        // Past the first PATCH: the server holds 8 MiB at least.
        await eventually(async () => Number(await item.getAttribute('data-sent')) > CHUNK + MiB, 60000,
          'the upload to pass its first block');
        assert.equal(await storedSha(base, reloaded.name), null, 'not listed while unfinished');
        await page.reload();
      } finally {
        await cdp.send('Network.emulateNetworkConditions', {
          offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
        }).catch(() => {});
        await cdp.detach().catch(() => {});
      }
      const paused = page.locator(`#uploads li[data-name="${reloaded.name}"][data-state="paused"]`);
      await paused.waitFor({ timeout: 15000 });
      assert.match(await paused.textContent(), /choose reloaded\.bin again to resume/);
      patches.length = 0;
      await page.locator('#file-input').setInputFiles([reloaded.path]);
      const item = page.locator(`#uploads li[data-name="${reloaded.name}"]`);
      await eventually(async () => (await item.getAttribute('data-state')) === 'done', 90000,
        async () => `${reloaded.name} done, row says ${await item.textContent()}`);
      const resumedAt = Number(await item.getAttribute('data-resumed-at'));
      assert.ok(resumedAt >= CHUNK, `resumed at ${resumedAt}`);
      assert.ok(patches.length > 0 && patches[0].offset >= CHUNK, `first PATCH after the reload at ${patches[0]?.offset}`);
      assert.equal(await storedSha(base, reloaded.name), reloaded.sha256);
      assert.equal(await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('sockgate-tus:')).length), 0,
        'a finished upload is forgotten');
    });

    await step('the gateway stops cleanly on SIGTERM', async () => {
      await context.close();
      context = null;
      await proxy.close();
      proxy = null;
      const how = await gw.stop();
      gw = null;
      assert.ok(how.clean, `sockgate exit: ${JSON.stringify(how)}`);
    });

    // The proxy's cuts show as net:: errors: they are the test's doing, not the page's.
    await stepNoConsoleErrors(/net::ERR_|Failed to load resource: net::/);
  } finally {
    if (gw && hasFailures()) console.log(`gateway log:\n${gw.log()}`);
    if (context) await context.close().catch(() => {});
    if (proxy) await proxy.close();
    if (gw) await gw.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

await runMain(main);
