// The token-protected run: the page asks for the token once, keeps it, and sends it everywhere.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { chatMessageArrives } from './chat_steps.mjs';
import { assert, expectNetworkError, step, watchPage } from '../../lib/check.mjs';
import { startGateway } from '../../lib/procs.mjs';

const TOKEN = 'browser-test-token-1f0c';
// This gateway also has a small upload limit, to see a 413 told in words.
const MAX_UPLOAD = 8 * 1024 * 1024;

async function textOf(locator) {
  return (await locator.textContent()) || '';
}

async function waitForText(locator, pattern, ms = 15000) {
  const end = Date.now() + ms;
  while (!pattern.test(await textOf(locator))) {
    if (Date.now() > end) throw new Error(`${locator} does not match ${pattern}: ${JSON.stringify(await textOf(locator))}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function sha256File(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Runs the token steps against a second gateway started with --token; each step is recorded. */
export async function tokenSteps({ launch, viewport, tmp, inputs, artifacts }) {
  const fileRoot = path.join(tmp, 'files-token');
  fs.mkdirSync(fileRoot);
  let gw = null;
  let context = null;
  let page = null;
  try {
    const started = await step('token: gateway with --token starts', async () => {
      gw = await startGateway(['--file-root', fileRoot, '--token', TOKEN, '--max-upload', String(MAX_UPLOAD),
        '--chat-listen', '127.0.0.1:0']);
      context = await launch(path.join(tmp, 'profile-token'), viewport);
      page = context.pages()[0] || await context.newPage();
      watchPage(page, 'token page');
    });
    if (!started) return;

    expectNetworkError('token: the page asks for it', 401, /^\/api\/v1\//);
    await step('token: the page asks for it', async () => {
      await page.goto(gw.url + '/');
      await page.locator('#token-panel').waitFor({ state: 'visible', timeout: 15000 });
      await waitForText(page.locator('#file-list-status'), /needs a valid access token.*401/);
      assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.id), 'token-input');
      await page.screenshot({ path: path.join(artifacts, 'desktop-token.png') });
    });

    expectNetworkError('token: a wrong token is refused in words', 401, /^\/api\/v1\//);
    await step('token: a wrong token is refused in words', async () => {
      await page.locator('#token-input').fill('not-the-token');
      await page.keyboard.press('Enter');
      await waitForText(page.locator('#token-error'), /refused this token/);
      assert.equal(await page.locator('#token-panel').isVisible(), true);
    });

    // A request the page sent with the wrong token just before may be logged refused only now
    // (Chromium logs a response when it lands, and the step is told by time); the right token's
    // own requests are checked by what the page shows below, so a 401 of theirs still fails.
    expectNetworkError('token: the right token opens the API', 401, /^\/api\/v1\//);
    await step('token: the right token opens the API', async () => {
      await page.getByLabel('Token', { exact: true }).fill(TOKEN);
      await page.getByRole('button', { name: 'Use token', exact: true }).click();
      await waitForText(page.locator('#file-list-status'), /No files stored yet/);
      assert.equal(await page.locator('#token-panel').isVisible(), false);
      await page.locator('#echo-input').fill('token ok');
      await page.getByRole('button', { name: 'Send', exact: true }).click();
      await waitForText(page.locator('#echo-reply'), /^TOKEN OK$/);
    });

    // A browser's WebSocket cannot send the Authorization header: the page trades the token for
    // the gateway's HttpOnly session cookie first, so a refused socket (a 401 on the console) fails.
    await step('token: the chat socket is let in by the session cookie', async () => {
      await chatMessageArrives(page, gw, 'under a token: 你好');
      const cookies = await context.cookies(gw.url + '/api/v1/chat/events');
      const cookie = cookies.find((c) => c.name === 'sockgate_token');
      assert.ok(cookie, 'the session cookie is set');
      assert.equal(cookie.httpOnly, true);
      assert.ok(!cookie.value.includes(TOKEN), 'the cookie does not carry the token');
    });

    await step('token: upload and download carry the token', async () => {
      await page.locator('#file-input').setInputFiles([inputs.small.path]);
      const item = page.locator(`#uploads li[data-name="${inputs.small.name}"]`);
      await waitForText(item.locator('.upload-state'), /Uploaded 100%/, 30000);
      assert.equal(sha256File(path.join(fileRoot, inputs.small.name)), inputs.small.sha256);
      const row = page.locator(`#file-list li[data-name="${inputs.small.name}"]`);
      await row.waitFor({ timeout: 10000 });
      const [download] = await Promise.all([
        page.waitForEvent('download', { timeout: 30000 }),
        row.getByRole('link', { name: `Download ${inputs.small.name}` }).click(),
      ]);
      const saved = path.join(tmp, 'downloaded-with-token');
      await download.saveAs(saved);
      assert.equal(download.suggestedFilename(), inputs.small.name);
      assert.equal(sha256File(saved), inputs.small.sha256);
    });

    // A file that big goes up with tus: the creation (POST /api/v1/uploads/) is what is refused.
    expectNetworkError('token: an upload over --max-upload is refused in words', 413, /^\/api\/v1\/(files|uploads)\//);
    await step('token: an upload over --max-upload is refused in words', async () => {
      assert.ok(inputs.big.size > MAX_UPLOAD);
      await page.locator('#file-input').setInputFiles([inputs.big.path]);
      const item = page.locator(`#uploads li[data-name="${inputs.big.name}"]`);
      await waitForText(item.locator('.upload-state'), /^An upload may have at most .* \(--max-upload\).*\(HTTP 413\)$/, 30000);
      assert.equal(await item.getAttribute('data-state'), 'failed');
      // The bar of a failed upload does not stay the blue of a success.
      assert.equal(await item.locator('progress.is-failed').count(), 1);
      await waitForText(page.locator('#file-list-status'), /^1 file,/);
      assert.deepEqual(fs.readdirSync(fileRoot).filter((n) => n !== '.meta' && n !== '.sessions'), [inputs.small.name]);
    });

    await step('token: kept for the session across a reload', async () => {
      await page.reload();
      await waitForText(page.locator('#file-list-status'), /^1 file,/);
      assert.equal(await page.locator('#token-panel').isVisible(), false);
      await page.setViewportSize({ width: 375, height: 812 });
      await page.screenshot({ path: path.join(artifacts, 'phone-token.png'), fullPage: true });
      await page.setViewportSize(viewport);
      // Back from the reload, the kept token opens the chat stream again.
      await chatMessageArrives(page, gw, 'after a reload');
      await page.getByRole('button', { name: 'Forget token', exact: true }).click();
      assert.equal(await page.evaluate(() => sessionStorage.length), 0);
      await waitForText(page.locator('#chat-state'), /token was forgotten/);
      const end = Date.now() + 15000;
      while ((await context.cookies(gw.url + '/api/v1/chat/events')).some((c) => c.name === 'sockgate_token')) {
        if (Date.now() > end) throw new Error('the session cookie outlived "Forget token"');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    });

    await step('token: the gateway stops cleanly on SIGTERM', async () => {
      await context.close();
      context = null;
      const how = await gw.stop();
      gw = null;
      assert.ok(how.clean, `sockgate exit: ${JSON.stringify(how)}`);
    });
  } finally {
    if (context) await context.close().catch(() => {});
    if (gw) {
      console.log(`token gateway log:\n${gw.log()}`);
      await gw.stop();
    }
  }
}
