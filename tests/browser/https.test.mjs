// The page over HTTPS in headless Chromium: the test makes its own CA and server certificate with
// openssl, trusts the CA the way a user would (Chromium's NSS database, in a HOME of the test's
// own), and uses the page. A certificate Chromium did not trust would fail the first navigation.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

import { startGateway } from '../lib/procs.mjs';

const CHROMIUM = process.env.SOCKGATE_CHROMIUM || '/usr/bin/chromium';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic',
];

function sh(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

/** A CA and a certificate for 127.0.0.1 signed by it, in dir: ca.pem, srv.pem, srv.key. */
function makePki(dir) {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  sh('openssl', ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=sockgate-test-ca'], { cwd: dir });
  sh('openssl', ['req', ...ec, '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=localhost'], { cwd: dir });
  fs.writeFileSync(path.join(dir, 'srv.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  sh('openssl', ['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'srv.pem', '-days', '2', '-extfile', 'srv.ext'], { cwd: dir });
}

/** Trusts ca.pem for TLS servers in the NSS database under home (where Chromium on Linux looks). */
function trustCa(home, caFile) {
  const db = path.join(home, '.pki', 'nssdb');
  fs.mkdirSync(db, { recursive: true });
  sh('certutil', ['-d', `sql:${db}`, '-N', '--empty-password']);
  sh('certutil', ['-d', `sql:${db}`, '-A', '-t', 'C,,', '-n', 'sockgate-test-ca', '-i', caFile]);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sockgate-https-'));
let gw = null;
let ctx = null;
let failed = 0;
try {
  makePki(work);
  const home = path.join(work, 'home');
  trustCa(home, path.join(work, 'ca.pem'));
  gw = await startGateway(['--tls-cert', path.join(work, 'srv.pem'), '--tls-key', path.join(work, 'srv.key'),
    '--file-root', path.join(work, 'files'), '--allow', 'echo']);
  assert.match(gw.url, /^https:\/\//, 'the gateway said https:// in its listening line');
  const profile = path.join(work, 'profile');
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    ignoreDefaultArgs: true,
    args: [...FLAGS, '--remote-debugging-pipe', `--user-data-dir=${profile}`, 'about:blank'],
    env: { ...process.env, HOME: home },
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  const answer = await page.goto(`${gw.url}/`);
  assert.equal(answer.status(), 200);
  assert.equal(await page.evaluate(() => location.protocol), 'https:');
  assert.match(answer.headers()['strict-transport-security'] || '', /^max-age=/);
  // The echo panel, as a person uses it.
  await page.locator('#echo-input').focus();
  await page.keyboard.type('over https');
  await page.keyboard.press('Enter');
  await page.locator('#echo-reply').filter({ hasText: /^OVER HTTPS$/ }).waitFor({ timeout: 10000 });
  // And the API from the page's own origin.
  const exec = await page.evaluate(async () => {
    const r = await fetch('/api/v1/exec', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ argv: ['echo', 'secure'] }) });
    return { status: r.status, body: await r.json() };
  });
  assert.equal(exec.status, 200);
  assert.equal(exec.body.stdout, 'secure\n');
  console.log('ok - the page over HTTPS with the test CA trusted: loads, echo and exec work');
} catch (err) {
  failed = 1;
  console.error('FAIL - the page over HTTPS:', err);
  if (gw) console.error(gw.log());
} finally {
  if (ctx) await ctx.close();
  if (gw) {
    const how = await gw.stop();
    if (!how.clean) {
      failed = 1;
      console.error('FAIL - the gateway did not exit 0 on SIGTERM', how);
    }
  }
  fs.rmSync(work, { recursive: true, force: true });
}
console.log(`${failed ? 0 : 1} passed, ${failed} failed`);
process.exit(failed);
