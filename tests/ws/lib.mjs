// Helpers of the WebSocket tests: free ports, a ws client that collects, a raw client (programs: tests/lib/procs.mjs).

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import WebSocket from 'ws';

// Every wait of these tests is for an event that must come; this only keeps a broken run from hanging.
export const WAIT_MS = 30000;

/** Resolves with what `fn` resolves, or rejects after WAIT_MS naming `what`. */
export function within(what, promise, ms = WAIT_MS) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Returns a TCP port that was free a moment ago (for websockify, which cannot report the one it got). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Waits until something accepts TCP connections on port (websockify prints nothing we can wait on). */
export async function waitForPort(port) {
  const end = Date.now() + WAIT_MS;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on 127.0.0.1:${port} after ${WAIT_MS} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Opens a WebSocket and resolves once it is open with { ws, protocol, messages, closed }:
 * messages collects { data: Buffer, isBinary }, closed resolves with { code, reason }.
 * Rejects with { status } when the server answers the handshake with an HTTP error.
 */
export function open(url, protocols, options = {}) {
  const ws = new WebSocket(url, protocols, options);
  const messages = [];
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('message', (data, isBinary) => messages.push({ data: Buffer.from(data), isBinary }));
  return within(`WebSocket ${url} to open`, new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, protocol: ws.protocol, messages, closed }));
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}: ${body}`), { status: res.statusCode, body })));
    });
    ws.once('error', (err) => reject(err));
  }));
}

/** Waits until the collected messages hold at least n payload bytes; returns them joined. */
export async function collect(conn, n, decode = (m) => m.data) {
  const end = Date.now() + WAIT_MS;
  for (;;) {
    const joined = Buffer.concat(conn.messages.map(decode));
    if (joined.length >= n) return joined;
    if (Date.now() > end) throw new Error(`got ${joined.length} of ${n} bytes within ${WAIT_MS} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What the echo backend (--mode upper) answers to buf: ASCII letters upper-cased. */
export function upper(buf) {
  const out = Buffer.from(buf);
  for (let i = 0; i < out.length; i++) if (out[i] >= 0x61 && out[i] <= 0x7a) out[i] -= 0x20;
  return out;
}

/** n random bytes. */
export function randomBytes(n) {
  return crypto.randomBytes(n);
}

/** A client frame (FIN, the opcode, masked with a zero key so the payload reads as itself). */
export function clientFrame(opcode, payload) {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n])
    : n < 65536 ? Buffer.from([0x80 | opcode, 0x80 | 126, n >> 8, n & 255])
      : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return b; })()]);
  return Buffer.concat([head, Buffer.alloc(4), payload]);
}

/**
 * A raw client: TCP, the handshake by hand, then whatever the test writes. Resolves once the
 * 101 is in with { socket, rest (bytes after the head), ended (resolves at the server's FIN) }.
 */
export function rawOpen(port, path, headers = {}) {
  const socket = net.connect(port, '127.0.0.1');
  const key = crypto.randomBytes(16).toString('base64');
  const ended = new Promise((resolve) => socket.on('close', resolve));
  socket.on('error', () => {});
  return within('a raw WebSocket handshake', new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (c) => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      const head = buf.subarray(0, end).toString();
      if (!/^HTTP\/1\.1 101/.test(head)) return reject(new Error(`no 101: ${head}`));
      const rest = { bytes: buf.subarray(end + 4) };
      socket.on('data', (d) => { rest.bytes = Buffer.concat([rest.bytes, d]); });
      resolve({ socket, rest, ended, head });
    };
    socket.on('data', onData);
    socket.on('connect', () => {
      const all = { 'Sec-WebSocket-Version': '13', ...headers };
      const extra = Object.entries(all).map(([k, v]) => `${k}: ${v}\r\n`).join('');
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
        + `Sec-WebSocket-Key: ${key}\r\n${extra}\r\n`);
    });
  }));
}

/** The gateway's resident memory in KiB (/proc/PID/status VmRSS). */
export function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]);
}

/** Makes a self-signed certificate for 127.0.0.1 in dir; returns { cert, key } paths. */
export function selfSigned(dir) {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`, '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert: `${dir}/cert.pem`, key: `${dir}/key.pem` };
}
