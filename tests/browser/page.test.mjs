// End-to-end test of the web page in headless Chromium against a real sockgate on a free port.

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  assert, expectNetworkError, hasFailures, runMain, step, stepNoConsoleErrors, watchPage,
} from '../lib/check.mjs';
import { chatSteps } from './lib/chat_steps.mjs';
import { launchChromium } from './lib/chromium.mjs';
import { startGateway } from '../lib/procs.mjs';
import { tokenSteps } from './lib/token_steps.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.join(HERE, 'artifacts');
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 375, height: 812 };
const MiB = 1024 * 1024;
const BIG_SIZE = 24 * MiB;
const CANCEL_SIZE = 16 * MiB;
// Upload speed while the cancel step runs: slow enough that a cancel lands midway.
const CANCEL_THROUGHPUT = 512 * 1024;
// The paths of every WebSocket the page opened (the chat must use one).
const socketUrls = [];
const ALLOWED = 'echo,ls,sleep,sh,seq';

/** Writes `size` random bytes to `file` in 1 MiB pieces and returns their sha256 in hex. */
function writeRandomFile(file, size) {
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'w');
  try {
    for (let left = size; left > 0;) {
      const piece = crypto.randomBytes(Math.min(left, MiB));
      fs.writeSync(fd, piece);
      hash.update(piece);
      left -= piece.length;
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

function sha256File(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

async function apiFiles(gw) {
  const response = await fetch(`${gw.url}/api/v1/files`);
  assert.equal(response.status, 200, 'GET /api/v1/files from the test itself');
  const body = await response.json();
  return new Map(body.files.map((f) => [f.name, f]));
}

// Polls `fn` until it returns a truthy value or `ms` pass; `what` (text or a function giving
// it) explains a failure.
async function eventually(fn, ms, what) {
  const end = Date.now() + ms;
  let value;
  for (;;) {
    value = await fn();
    if (value) return value;
    if (Date.now() > end) throw new Error(`not true within ${ms} ms: ${typeof what === 'function' ? await what() : what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Returns true when some process has `arg` as one of its arguments (read from /proc). */
function processWithArg(arg) {
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').includes(arg)) return true;
    } catch {
      // The process ended while we looked.
    }
  }
  return false;
}

async function textOf(locator) {
  return (await locator.textContent()) || '';
}

async function waitForText(locator, pattern, ms = 15000) {
  return eventually(async () => pattern.test(await textOf(locator)), ms,
    async () => `${locator} to match ${pattern}, it reads ${JSON.stringify(await textOf(locator).catch(() => '?'))}`);
}

// Every form control needs a name a screen reader can say: a <label>, aria-label or its text.
async function unlabelledControls(page) {
  return page.evaluate(() => {
    const bad = [];
    for (const node of document.querySelectorAll('input, select, textarea, button, a[href]')) {
      if (node.closest('[hidden]')) continue;
      const labelled = (node.labels && node.labels.length > 0)
        || node.getAttribute('aria-label') || node.getAttribute('aria-labelledby')
        || (node.tagName !== 'INPUT' && node.textContent.trim());
      if (!labelled) bad.push(node.outerHTML.slice(0, 120));
    }
    return bad;
  });
}

async function main() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sockgate-browser-'));
  const fileRoot = path.join(tmp, 'files');
  const inputs = path.join(tmp, 'inputs');
  const downloads = path.join(tmp, 'downloads');
  for (const dir of [fileRoot, inputs, downloads]) fs.mkdirSync(dir);

  const small = { name: 'notes small.txt', path: path.join(inputs, 'notes small.txt') };
  fs.writeFileSync(small.path, `sockgate browser test\n${'line of text\n'.repeat(3000)}`);
  small.sha256 = sha256File(small.path);
  small.size = fs.statSync(small.path).size;
  const big = { name: 'big.bin', path: path.join(inputs, 'big.bin'), size: BIG_SIZE };
  big.sha256 = writeRandomFile(big.path, BIG_SIZE);
  const cancelled = { name: 'cancelled.bin', path: path.join(inputs, 'cancelled.bin'), size: CANCEL_SIZE };
  writeRandomFile(cancelled.path, CANCEL_SIZE);

  let gw = null;
  let context = null;
  let page = null;
  const stopAll = async () => {
    if (context) await context.close().catch(() => {});
    context = null;
    if (gw) {
      const how = await gw.stop();
      gw = null;
      return how;
    }
    return null;
  };

  try {
    const started = await step('gateway starts on a free port', async () => {
      // The UDP chat client needs the embedded chat on a port (by default it is a private UNIX socket).
      gw = await startGateway(['--file-root', fileRoot, '--allow', ALLOWED, '--chat-listen', '127.0.0.1:0']);
    });
    if (!started) return;

    const launched = await step('chromium starts', async () => {
      context = await launchChromium(path.join(tmp, 'profile'), DESKTOP);
      page = context.pages()[0] || await context.newPage();
      watchPage(page, 'page');
      page.on('websocket', (ws) => socketUrls.push(new URL(ws.url()).pathname));
    });
    if (!launched) return;

    await step('page loads with every backend up', async () => {
      const response = await page.goto(gw.url + '/');
      assert.equal(response.status(), 200);
      assert.match(response.headers()['content-security-policy'] || '', /default-src 'self'/);
      for (const name of ['echo', 'time', 'exec', 'file']) {
        const item = page.locator(`#status li[data-backend="${name}"]`);
        await item.waitFor({ timeout: 15000 });
        await eventually(async () => (await item.getAttribute('class')).includes('is-up'), 15000, `${name} shown up`);
      }
      await waitForText(page.locator('#file-list-status'), /No files stored yet/);
    });

    await step('every control has a label', async () => {
      assert.deepEqual(await unlabelledControls(page), []);
    });

    await step('echo with the keyboard', async () => {
      await page.locator('#echo-input').focus();
      await page.keyboard.type('hello, sockgate');
      await page.keyboard.press('Enter');
      await waitForText(page.locator('#echo-reply'), /^HELLO, SOCKGATE$/);
    });

    await step('echo over the live socket: one WebSocket, replies streamed back, counted in /metrics', async () => {
      const sockets = page.waitForEvent('websocket', { predicate: (ws) => ws.url().endsWith('/api/v1/ws/echo') });
      await page.locator('#echo-live').check();
      const ws = await sockets;
      await waitForText(page.locator('#echo-live-state'), /^Live/);
      await page.locator('#echo-input').fill('über the socket ✓');
      await page.getByRole('button', { name: 'Send', exact: true }).click();
      await waitForText(page.locator('#echo-reply'), /^üBER THE SOCKET ✓$/);
      assert.equal(ws.isClosed(), false, 'the socket stays open between messages');
      await page.locator('#echo-input').fill('second');
      await page.getByRole('button', { name: 'Send', exact: true }).click();
      await waitForText(page.locator('#echo-reply'), /^SECOND$/);
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.match(metrics, /^sockgate_websockets_open [1-9]/m);
      const closed = ws.waitForEvent('close');
      await page.locator('#echo-live').uncheck();
      await closed;
      await waitForText(page.locator('#echo-live-state'), /one HTTP request/);
    });

    await step('time with a typed format and with an example', async () => {
      await page.locator('#time-format').fill('%Y');
      await page.getByRole('button', { name: 'Ask', exact: true }).click();
      await waitForText(page.locator('#time-answer'), /^\d{4}$/);
      const year = Number(await textOf(page.locator('#time-answer')));
      const now = new Date().getFullYear();
      assert.ok(year === now || year === now - 1 || year === now + 1, `year ${year} is not around ${now}`);
      await page.locator('[data-format="%H:%M:%S"]').click();
      await waitForText(page.locator('#time-answer'), /^\d\d:\d\d:\d\d$/);
      assert.equal(await page.locator('#time-format').inputValue(), '%H:%M:%S');
    });

    await step('exec of an allowed command', async () => {
      await waitForText(page.locator('#exec-allowed'), /^Allowed here: echo, ls, sleep, sh, seq$/);
      await page.locator('#exec-command').fill('echo hello from the page');
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await waitForText(page.locator('#exec-status'), /Exit code 0/);
      assert.equal(await textOf(page.locator('#exec-stdout')), 'hello from the page\n');
      assert.equal(await textOf(page.locator('#exec-stderr')), '');
      assert.equal(await page.locator('#exec-result').isVisible(), true);
      assert.equal(await page.locator('#exec-status.is-error').count(), 0);
      // An empty stderr is not shown (an empty red box reads as an error that is not there).
      assert.equal(await page.locator('#exec-stderr-stream').isVisible(), false);
      // Standard output takes the panel's whole width, not half of it.
      const [outWidth, panelWidth] = await page.evaluate(() => [
        document.getElementById('exec-stdout').getBoundingClientRect().width,
        document.getElementById('exec').getBoundingClientRect().width]);
      assert.ok(outWidth > panelWidth * 0.8, `stdout is ${outWidth}px of a ${panelWidth}px panel`);
      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: gw.url });
      await page.getByRole('button', { name: 'Copy standard output', exact: true }).click();
      await waitForText(page.getByRole('button', { name: 'Copy standard output', exact: true }), /^Copied$/);
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), 'hello from the page\n');
    });

    await step('exec output shows before the command ends, and Stop ends it', async () => {
      // A marker only this run uses, so the process check below cannot see someone else's sleep.
      const marker = String(4000000 + (process.pid % 100000));
      await page.locator('#exec-command').fill(`sh -c 'echo first; echo second >&2; exec sleep ${marker}'`);
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await waitForText(page.locator('#exec-stdout'), /^first\n$/);
      await waitForText(page.locator('#exec-stderr'), /^second\n$/);
      // The command still runs: no exit code yet, the time runs, Stop is offered.
      assert.match(await textOf(page.locator('#exec-status')), /^Running /);
      assert.equal(await page.locator('#exec-stop').isVisible(), true);
      await eventually(() => processWithArg(marker), 10000, `a process "sleep ${marker}"`);
      const before = await textOf(page.locator('#exec-elapsed'));
      await waitForText(page.locator('#exec-elapsed'), /^\d+\.\d s$/);
      await eventually(async () => (await textOf(page.locator('#exec-elapsed'))) !== before, 10000,
        'the elapsed time to move');
      await page.getByRole('button', { name: 'Stop', exact: true }).click();
      await waitForText(page.locator('#exec-status'), /^Stopped/);
      assert.equal(await page.locator('#exec-stop').isVisible(), false);
      // What came before Stop stays on screen; the command itself is gone.
      assert.equal(await textOf(page.locator('#exec-stdout')), 'first\n');
      await eventually(() => !processWithArg(marker), 10000, `"sleep ${marker}" to be gone after Stop`);
    });

    await step('long exec output keeps the last 10,000 lines and says so', async () => {
      await page.locator('#exec-command').fill('seq 1 30000');
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await waitForText(page.locator('#exec-status'), /Exit code 0/, 30000);
      const lines = (await textOf(page.locator('#exec-stdout'))).split('\n');
      assert.equal(lines.length, 10001); // 10,000 lines and the empty rest after the last newline
      assert.equal(lines[0], '20001');
      assert.equal(lines[9999], '30000');
      await waitForText(page.locator('#exec-stdout-dropped'), /^20,000 earlier lines were dropped/);
      assert.equal(await page.locator('#exec-stdout-dropped').isVisible(), true);
    });

    await step('exec output wraps on a phone instead of running off it', async () => {
      await page.locator('#exec-command').fill(`echo ${'long-line-'.repeat(40)}`);
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await waitForText(page.locator('#exec-stdout'), /long-line-long-line/);
      await page.setViewportSize(PHONE);
      const cut = await page.evaluate(() => {
        const out = document.getElementById('exec-stdout');
        return out.scrollWidth - out.clientWidth;
      });
      await page.setViewportSize(DESKTOP);
      assert.ok(cut <= 0, `${cut}px of the output is cut on a phone`);
    });

    await step('the time box takes at most the service\'s 256 bytes', async () => {
      assert.equal(await page.locator('#time-format').getAttribute('maxlength'), '256');
      await page.locator('#time-format').fill('€'.repeat(100)); // 100 characters, 300 bytes
      await page.getByRole('button', { name: 'Ask', exact: true }).click();
      await waitForText(page.locator('#time-answer'), /300 bytes.*at most 256/);
      await page.locator('#time-format').fill('%Y');
    });

    await step('exec stopped at its time limit says so', async () => {
      await page.locator('#exec-command').fill('sleep 30');
      await page.getByLabel('Time limit (ms)').fill('300');
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await waitForText(page.locator('#exec-status'), /^Timed out/, 20000);
      assert.equal(await page.locator('#exec-status.is-error').count(), 1);
      await page.getByLabel('Time limit (ms)').fill('');
    });

    expectNetworkError('exec of a refused command', 403, /^\/api\/v1\/exec$/);
    await step('exec of a refused command', async () => {
      await page.locator('#exec-command').fill('uname -a');
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await waitForText(page.locator('#exec-status'), /^Command not allowed: 'uname' \(HTTP 403\)$/);
      assert.equal(await page.locator('#exec-status.is-error').count(), 1);
      assert.equal(await page.locator('#exec-result').isVisible(), false);
    });

    await step('two uploads through the file input reach 100% and are listed', async () => {
      // Records every byte count the page's progress handler shows, to see the bars move by
      // themselves (the final "Uploaded" state alone could be set without any progress).
      await page.evaluate(() => {
        window.sentLog = {};
        window.numbersLog = [];
        new MutationObserver((records) => {
          for (const r of records) {
            const name = r.target.dataset.name;
            (window.sentLog[name] = window.sentLog[name] || []).push(Number(r.target.dataset.sent));
            window.numbersLog.push(r.target.querySelector('.upload-numbers').textContent);
          }
        }).observe(document.getElementById('uploads'), { subtree: true, attributeFilter: ['data-sent'] });
      });
      await page.locator('#file-input').setInputFiles([small.path, big.path]);
      for (const f of [small, big]) {
        const item = page.locator(`#uploads li[data-name="${f.name}"]`);
        await item.waitFor({ timeout: 10000 });
        await eventually(async () => (await item.getAttribute('data-state')) !== 'running', 60000, `${f.name} finished`);
        assert.equal(await item.getAttribute('data-state'), 'done', await textOf(item));
        assert.equal(await item.locator('progress').evaluate((bar) => bar.value), 100);
        assert.match(await textOf(item.locator('.upload-state')), /Uploaded 100%/);
        const sent = await page.evaluate((name) => window.sentLog[name] || [], f.name);
        // Chromium sends no upload progress event for a body that goes out in one piece.
        if (f === small && sent.length === 0) continue;
        assert.ok(sent.length > 0, `${f.name}: no progress was shown`);
        assert.equal(sent[sent.length - 1], f.size, `${f.name}: progress ended at ${sent[sent.length - 1]}`);
        assert.deepEqual(sent, [...sent].sort((a, b) => a - b), `${f.name}: progress went backwards`);
      }
      for (const f of [small, big]) await page.locator(`#file-list li[data-name="${f.name}"]`).waitFor({ timeout: 10000 });
      const stored = await apiFiles(gw);
      for (const f of [small, big]) {
        assert.ok(stored.has(f.name), `${f.name} in GET /api/v1/files`);
        assert.equal(stored.get(f.name).size, f.size, `${f.name} size`);
        assert.equal(stored.get(f.name).sha256, f.sha256, `${f.name} sha256`);
        assert.equal(sha256File(path.join(fileRoot, f.name)), f.sha256, `${f.name} bytes in the file root`);
      }
      await waitForText(page.locator('#file-list-status'), /^2 files/);
      // Speeds read as people write them: "512 B/s", "1.50 MiB/s", never a raw float.
      const shown = await page.evaluate(() => window.numbersLog);
      for (const text of shown) assert.doesNotMatch(text, /\d\.\d{3,}/, `speed shown as ${text}`);
    });

    await step('uploading a name already stored asks first; Skip keeps the stored file', async () => {
      const before = (await apiFiles(gw)).get(small.name);
      await page.locator('#file-input').setInputFiles([small.path]);
      const asking = page.locator(`#uploads li[data-name="${small.name}"][data-state="asking"]`);
      await asking.waitFor({ timeout: 10000 });
      await asking.getByRole('button', { name: `Skip ${small.name}` }).click();
      await asking.waitFor({ state: 'detached', timeout: 10000 });
      assert.deepEqual((await apiFiles(gw)).get(small.name), before);
      await page.locator('#file-input').setInputFiles([small.path]);
      await asking.getByRole('button', { name: `Replace ${small.name}` }).click();
      const item = page.locator(`#uploads li[data-name="${small.name}"]`).first();
      await waitForText(item.locator('.upload-state'), /Uploaded 100%/, 30000);
      assert.equal((await apiFiles(gw)).get(small.name).sha256, small.sha256);
    });

    await step('screenshots at desktop and phone width', async () => {
      await page.screenshot({ path: path.join(ARTIFACTS, 'desktop.png'), fullPage: true });
      await page.setViewportSize(PHONE);
      // Against clientWidth: desktop Chromium's 15px scrollbar leaves 360px of layout, narrower
      // than the phone itself, whose scrollbars overlay the page.
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.ok(overflow <= 0, `the page is ${overflow}px wider than a ${PHONE.width}px phone`);
      await page.screenshot({ path: path.join(ARTIFACTS, 'phone.png'), fullPage: true });
      // A touch screen has nothing to drop files from: the hint says choose, not drop.
      const cdp = await context.newCDPSession(page);
      await cdp.send('Emulation.setTouchEmulationEnabled', { enabled: true, maxTouchPoints: 5 });
      try {
        await eventually(async () => !(await page.locator('#files-hint .drop-hint').isVisible()), 5000, 'no drop hint on touch');
        assert.match(await page.locator('#files-hint').innerText(), /^Choose several at once/);
      } finally {
        await cdp.send('Emulation.setTouchEmulationEnabled', { enabled: false });
        await cdp.detach();
      }
      assert.match(await page.locator('#files-hint').innerText(), /^Drop files anywhere/);
      await page.setViewportSize(DESKTOP);
    });

    await step('download gives the same bytes', async () => {
      const row = page.locator(`#file-list li[data-name="${big.name}"]`);
      const [download] = await Promise.all([
        page.waitForEvent('download', { timeout: 30000 }),
        row.getByRole('link', { name: `Download ${big.name}` }).click(),
      ]);
      assert.equal(download.suggestedFilename(), big.name);
      const saved = path.join(downloads, big.name);
      await download.saveAs(saved);
      assert.equal(fs.statSync(saved).size, big.size);
      assert.equal(sha256File(saved), big.sha256);
    });

    await step('delete asks first; Keep or Escape keeps the file', async () => {
      const row = page.locator(`#file-list li[data-name="${small.name}"]`);
      await row.getByRole('button', { name: `Delete ${small.name}` }).click();
      await row.getByRole('group', { name: `Confirm deleting ${small.name}` }).waitFor();
      await row.getByRole('button', { name: `Keep ${small.name}` }).click();
      await row.getByRole('button', { name: `Delete ${small.name}` }).waitFor();
      // The same with the keyboard: Enter asks, focus lands on Keep, Escape backs out.
      const focused = () => page.evaluate(() => document.activeElement.getAttribute('aria-label'));
      await row.getByRole('button', { name: `Delete ${small.name}` }).focus();
      await page.keyboard.press('Enter');
      assert.equal(await focused(), `Keep ${small.name}`);
      await page.keyboard.press('Escape');
      assert.equal(await focused(), `Delete ${small.name}`);
      assert.ok((await apiFiles(gw)).has(small.name));
    });

    await step('delete after confirming removes the file', async () => {
      const row = page.locator(`#file-list li[data-name="${big.name}"]`);
      await row.getByRole('button', { name: `Delete ${big.name}` }).click();
      await row.getByRole('button', { name: `Yes, delete ${big.name}` }).click();
      await page.locator(`#file-list li[data-name="${big.name}"]`).waitFor({ state: 'detached', timeout: 15000 });
      // Its upload row no longer claims "Uploaded 100%".
      await waitForText(page.locator(`#uploads li[data-name="${big.name}"] .upload-state`), /since deleted/);
      assert.equal((await apiFiles(gw)).has(big.name), false);
      assert.equal(fs.existsSync(path.join(fileRoot, big.name)), false);
      await waitForText(page.locator('#file-list-status'), /^1 file,/);
    });

    // Cancel terminates the tus upload; its DELETE meets 423 while the gateway still notices the aborted PATCH.
    expectNetworkError('an upload cancelled midway leaves nothing behind', 423, /^\/api\/v1\/uploads\//);
    await step('an upload cancelled midway leaves nothing behind', async () => {
      const cdp = await context.newCDPSession(page);
      await cdp.send('Network.enable');
      await cdp.send('Network.emulateNetworkConditions', {
        offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: CANCEL_THROUGHPUT,
      });
      try {
        await page.locator('#file-input').setInputFiles([cancelled.path]);
        const item = page.locator(`#uploads li[data-name="${cancelled.name}"]`);
        await eventually(async () => {
          const value = await item.locator('progress').evaluate((bar) => bar.value).catch(() => 0);
          return value >= 5;
        }, 30000, 'the upload to get going');
        const before = await item.locator('progress').evaluate((bar) => bar.value);
        assert.ok(before < 100, `progress ${before} is midway`);
        await item.getByRole('button', { name: `Cancel upload of ${cancelled.name}` }).click();
        await eventually(async () => (await item.getAttribute('data-state')) === 'cancelled', 10000, 'cancelled state');
        assert.match(await textOf(item.locator('.upload-state')), /Cancelled/);
      } finally {
        await cdp.send('Network.emulateNetworkConditions', {
          offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
        });
        await cdp.detach();
      }
      // The gateway learns of the disconnect and the backend removes its partial file. The
      // root's hidden .meta folder is the file backend's own checksum cache, and .sessions its
      // resumable uploads (a PUT never uses one), not files.
      const visible = () => fs.readdirSync(fileRoot).filter((n) => n !== '.meta' && n !== '.sessions');
      await eventually(async () => {
        const left = visible();
        return left.length === 1 && left[0] === small.name;
      }, 15000, () => `the file root to hold only ${small.name}, it holds ${JSON.stringify(visible())}`
        + ' (an .upload-* left means the gateway has not noticed that the browser closed the connection)');
      const meta = path.join(fileRoot, '.meta');
      const records = fs.existsSync(meta) ? fs.readdirSync(meta) : [];
      assert.equal(records.includes(cancelled.name), false, `.meta holds ${JSON.stringify(records)}`);
      const stored = await apiFiles(gw);
      assert.deepEqual([...stored.keys()], [small.name]);
      await page.getByRole('button', { name: 'Refresh list', exact: true }).click();
      await waitForText(page.locator('#file-list-status'), /^1 file,/);
      assert.equal(await page.locator(`#file-list li[data-name="${cancelled.name}"]`).count(), 0);
    });

    await step('a file dropped on the panel is uploaded', async () => {
      const text = 'dropped on the files panel by the test\n';
      await page.evaluate((content) => {
        const data = new DataTransfer();
        data.items.add(new File([content], 'dropped.txt', { type: 'text/plain' }));
        const target = document.querySelector('#files .hint');
        for (const type of ['dragenter', 'dragover', 'drop']) {
          target.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
        }
      }, text);
      const item = page.locator('#uploads li[data-name="dropped.txt"]');
      await waitForText(item.locator('.upload-state'), /Uploaded 100%/, 30000);
      await page.locator('#file-list li[data-name="dropped.txt"]').waitFor({ timeout: 10000 });
      const stored = (await apiFiles(gw)).get('dropped.txt');
      assert.ok(stored, 'dropped.txt in GET /api/v1/files');
      assert.equal(stored.sha256, crypto.createHash('sha256').update(text).digest('hex'));
      assert.equal(await page.locator('#files.is-dropping').count(), 0, 'the drop highlight is cleared');
    });

    await chatSteps(page, gw);

    await step('the chat panel runs over one WebSocket (/api/v1/ws/chat), not the SSE stream', async () => {
      assert.ok(socketUrls.includes('/api/v1/ws/chat'), `sockets opened: ${JSON.stringify(socketUrls)}`);
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.match(metrics, /^sockgate_websockets_open [1-9]/m, 'the chat socket is open');
      assert.match(metrics, /^sockgate_chat_streams_open 0$/m, 'no SSE stream is open');
    });

    await step('the gateway stops cleanly on SIGTERM', async () => {
      await context.close();
      context = null;
      const how = await gw.stop();
      gw = null;
      assert.ok(how.clean, `sockgate exit: ${JSON.stringify(how)}`);
    });

    await tokenSteps({ launch: launchChromium, viewport: DESKTOP, tmp, inputs: { small, big }, artifacts: ARTIFACTS });

    await stepNoConsoleErrors();
  } finally {
    if (gw && hasFailures()) console.log(`gateway log:\n${gw.log()}`);
    await stopAll();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

await runMain(main);
