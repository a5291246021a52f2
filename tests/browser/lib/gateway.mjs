// Starts the real sockgate binary on a free loopback port and stops it again.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const START_TIMEOUT_MS = 20000;
// Longer than the gateway's default --grace-ms (10 s), so a slow but clean exit is not cut short.
const STOP_TIMEOUT_MS = 20000;
// Only the end of the gateway's log is kept, enough to explain a failure.
const LOG_TAIL_BYTES = 16384;

/** Returns the path of build/bin/sockgate: $SOCKGATE_BIN_DIR (set by ctest) or the default build. */
export function gatewayBinary() {
  const dir = process.env.SOCKGATE_BIN_DIR || path.resolve(HERE, '../../../build/bin');
  return path.join(dir, 'sockgate');
}

/**
 * Starts sockgate with --listen 127.0.0.1:0 and the extra arguments, and resolves once it
 * printed `listening on HOST:PORT` with { url, port, pid, stop(), log() }; rejects if it exits first.
 */
export function startGateway(extraArgs) {
  const bin = gatewayBinary();
  if (!fs.existsSync(bin)) {
    return Promise.reject(new Error(`${bin} does not exist: build the project first (cmake --build build)`));
  }
  const args = ['--listen', '127.0.0.1:0', ...extraArgs];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  let exited = null;
  const keep = (chunk) => {
    log = (log + chunk.toString('utf8')).slice(-LOG_TAIL_BYTES);
  };
  child.stdout.on('data', keep);
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });

  return new Promise((resolve, reject) => {
    let pending = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sockgate did not print "listening on" within ${START_TIMEOUT_MS} ms:\n${log}`));
    }, START_TIMEOUT_MS);
    const onStderr = (chunk) => {
      keep(chunk);
      pending += chunk.toString('utf8');
      // "listening on HOST:PORT", or "listening on https://HOST:PORT" when the gateway serves HTTPS.
      const match = /listening on (https:\/\/)?(\S+):(\d+)/.exec(pending);
      if (!match) return;
      clearTimeout(timer);
      pending = '';
      const port = Number(match[3]);
      resolve({
        url: `${match[1] ? 'https' : 'http'}://127.0.0.1:${port}`,
        port,
        pid: child.pid,
        log: () => log,
        stop: () => stopGateway(child, exitPromise, () => exited),
      });
    };
    child.stderr.on('data', onStderr);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    exitPromise.then((how) => {
      clearTimeout(timer);
      reject(new Error(`sockgate exited before listening (${how.code ?? how.signal}):\n${log}`));
    });
  });
}

// SIGTERM, then the exit status: 0 is the clean shutdown every sockgate program promises.
async function stopGateway(child, exitPromise, exitedNow) {
  if (!exitedNow()) child.kill('SIGTERM');
  const timeout = new Promise((resolve) => setTimeout(() => resolve(null), STOP_TIMEOUT_MS));
  const how = await Promise.race([exitPromise, timeout]);
  if (how === null) {
    child.kill('SIGKILL');
    await exitPromise;
    return { code: null, signal: 'SIGKILL', clean: false };
  }
  return { ...how, clean: how.code === 0 };
}
