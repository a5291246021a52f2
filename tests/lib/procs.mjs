// Starts the real sockgate programs (the gateway or a backend) for the Node test suites (browser,
// tus, ws) and stops them again. Only node: built-ins here, so any suite may import it.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const START_TIMEOUT_MS = 20000;
// Longer than the gateway's default --grace (10 s), so a slow but clean exit is not cut short.
const STOP_TIMEOUT_MS = 20000;
// Only the end of a program's log is kept, enough to explain a failure.
const LOG_TAIL_BYTES = 16384;

/** Returns the path of build/bin/PROG: $SOCKGATE_BIN_DIR (set by ctest) or the default build. */
export function programPath(prog) {
  const dir = process.env.SOCKGATE_BIN_DIR || path.resolve(HERE, '../../build/bin');
  return path.join(dir, prog);
}

/** Returns the path of build/bin/sockgate (see programPath). */
export function gatewayBinary() {
  return programPath('sockgate');
}

/**
 * Starts prog with args (which must make it listen on port 0 or a given port) and resolves once it
 * printed `listening on HOST:PORT` (or `https://HOST:PORT`), with { port, addr, url, pid, child,
 * log(), stop(), kill() }; rejects if it exits first or does not listen within 20 s.
 */
export function startProgram(prog, args) {
  const bin = programPath(prog);
  if (!fs.existsSync(bin)) {
    return Promise.reject(new Error(`${bin} does not exist: build the project first (cmake --build build)`));
  }
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
      reject(new Error(`${prog} did not print "listening on" within ${START_TIMEOUT_MS} ms:\n${log}`));
    }, START_TIMEOUT_MS);
    child.stderr.on('data', (chunk) => {
      keep(chunk);
      if (pending === null) return;
      pending += chunk.toString('utf8');
      const match = /listening on (https:\/\/)?(\S+):(\d+)/.exec(pending);
      if (!match) return;
      clearTimeout(timer);
      pending = null;
      const port = Number(match[3]);
      resolve({
        port,
        addr: `127.0.0.1:${port}`,
        url: `${match[1] ? 'https' : 'http'}://127.0.0.1:${port}`,
        pid: child.pid,
        child,
        log: () => log,
        stop: () => stop(child, exitPromise, () => exited),
        // SIGKILL, as a crash: resolves with { code, signal } once the process is gone.
        kill: () => {
          if (!exited) child.kill('SIGKILL');
          return exitPromise;
        },
      });
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    exitPromise.then((how) => {
      clearTimeout(timer);
      reject(new Error(`${prog} exited before listening (${how.code ?? how.signal}):\n${log}`));
    });
  });
}

/**
 * Starts sockgate with --listen 127.0.0.1:0 and extraArgs as startProgram does; the result also
 * carries the --token it was given ('' without one), since /readyz names backends only to it.
 */
export async function startGateway(extraArgs) {
  const args = ['--listen', '127.0.0.1:0', ...extraArgs];
  const gw = await startProgram('sockgate', args);
  const tokenAt = args.indexOf('--token');
  return { ...gw, token: tokenAt >= 0 ? args[tokenAt + 1] : '' };
}

// SIGTERM, then the exit status: 0 is the clean shutdown every sockgate program promises.
async function stop(child, exitPromise, exitedNow) {
  if (!exitedNow()) child.kill('SIGTERM');
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS);
  });
  const how = await Promise.race([exitPromise, timeout]);
  clearTimeout(timer);
  if (how === null) {
    child.kill('SIGKILL');
    await exitPromise;
    return { code: null, signal: 'SIGKILL', clean: false };
  }
  return { ...how, clean: how.code === 0 };
}
