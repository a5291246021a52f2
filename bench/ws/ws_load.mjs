#!/usr/bin/env node
// ws_load.mjs - WebSocket (or raw TCP) echo round trips per second: CONNS sockets, each sending
// one SIZE-byte message and waiting for all its bytes back before the next, for SECONDS.
// Prints one JSON line {"rate", "round_trips", "seconds", "errors"}. The same client for every
// server measured (sockgate, websockify, the echo server itself), so their ratio is the servers'.
//
// usage: ws_load.mjs ws://HOST:PORT/PATH|tcp://HOST:PORT [--conns N] [--seconds S] [--size BYTES]
//        [--protocol binary]   (also SOCKGATE_WS_LOAD_CONNS, _SECONDS, _SIZE)

import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
// The ws package pinned for tests/ws (its setup.sh installs it).
const WebSocket = createRequire(path.join(here, '../../tests/ws/package.json'))('ws');

const args = process.argv.slice(2);
if (args.includes('--help') || !args[0]) {
  console.error('usage: ws_load.mjs ws://HOST:PORT/PATH|tcp://HOST:PORT [--conns N] [--seconds S] [--size BYTES] [--protocol P]');
  process.exit(args.includes('--help') ? 0 : 2);
}
const opt = (name, env, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : (process.env[env] || def);
};
const url = args[0];
const conns = Number(opt('conns', 'SOCKGATE_WS_LOAD_CONNS', '32'));
const seconds = Number(opt('seconds', 'SOCKGATE_WS_LOAD_SECONDS', '3'));
const size = Number(opt('size', 'SOCKGATE_WS_LOAD_SIZE', '64'));
const protocol = opt('protocol', 'SOCKGATE_WS_LOAD_PROTOCOL', 'binary');
// Digits only: the echo server upper-cases letters, and digits come back as they went.
const payload = Buffer.alloc(size, 0x37);

let total = 0;
let errors = 0;
let running = true;

function tcpClient() {
  const [host, port] = url.slice('tcp://'.length).split(':');
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(port), host, () => {
      s.setNoDelay(true);
      let got = 0;
      s.on('data', (d) => {
        got += d.length;
        while (got >= size) {
          got -= size;
          total++;
          if (running) s.write(payload);
        }
      });
      s.write(payload);
      resolve(s);
    });
    s.once('error', reject);
  });
}

function wsClient() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, [protocol], { perMessageDeflate: false });
    ws.once('open', () => {
      let got = 0;
      ws.on('message', (d) => {
        got += d.length;
        while (got >= size) {
          got -= size;
          total++;
          if (running) ws.send(payload);
        }
      });
      ws.send(payload);
      resolve(ws);
    });
    ws.once('error', reject);
    ws.on('close', (code) => { if (running && code !== 1000) errors++; });
  });
}

const clients = await Promise.all(Array.from({ length: conns }, () => (url.startsWith('tcp://') ? tcpClient() : wsClient())));
// Warm: the first half second is not counted.
await new Promise((r) => setTimeout(r, 500));
const start = process.hrtime.bigint();
const startTotal = total;
await new Promise((r) => setTimeout(r, seconds * 1000));
const trips = total - startTotal;
const secs = Number(process.hrtime.bigint() - start) / 1e9;
running = false;
for (const c of clients) (c.close ? c.close(1000) : c.destroy());
console.log(JSON.stringify({ rate: trips / secs, round_trips: trips, seconds: secs, errors }));
setTimeout(() => process.exit(errors ? 1 : 0), 200);
