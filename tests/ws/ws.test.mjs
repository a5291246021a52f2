// WebSockets through the real gateway with the ws package (npm): echo (binary, base64, text),
// limits, close codes both ways, pings, Origin and token rules, backpressure (the gateway's RSS
// while a client stops reading), wss://, the chat, and websockify (Debian's) as the reference
// for the same client code.

import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { assert, step, summary } from '../lib/check.mjs';
import { startProgram } from '../lib/procs.mjs';
import {
  WAIT_MS, clientFrame, collect, freePort, open, randomBytes, rawOpen, rssKiB, selfSigned, upper,
  waitForPort, within,
} from './lib.mjs';

const MiB = 1024 * 1024;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sockgate-ws-'));
const procs = [];

async function gateway(args) {
  const root = fs.mkdtempSync(path.join(tmp, 'files-'));
  const gw = await startProgram('sockgate', ['--listen', '127.0.0.1:0', '--file-root', root, ...args]);
  procs.push(gw);
  return gw;
}

async function metric(port, name, headers = {}) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { headers })).text();
  const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

/** Sends buf over an open echo socket and checks the echo comes back whole (base64 when asked). */
async function echoRoundTrip(url, protocol, buf) {
  const conn = await open(url, [protocol]);
  try {
    assert.equal(conn.protocol, protocol);
    if (protocol === 'base64') conn.ws.send(buf.toString('base64'));
    else conn.ws.send(buf);
    const decode = protocol === 'base64' ? (m) => {
      assert.equal(m.isBinary, false, 'base64 answers are text messages');
      return Buffer.from(m.data.toString(), 'base64');
    } : (m) => {
      assert.equal(m.isBinary, true, 'binary answers are binary messages');
      return m.data;
    };
    const got = await collect(conn, buf.length, decode);
    assert.ok(got.equals(upper(buf)), `the echo of ${buf.length} bytes came back unchanged but upper-cased`);
  } finally {
    conn.ws.close(1000);
    await within('the close', conn.closed);
  }
}

let echo;
let gw;
let ws;

try {
  const ok = await step('start sockgate-echo and the gateway (pings every 300 ms, 1 MiB messages)', async () => {
    echo = await startProgram('sockgate-echo', ['--listen', '127.0.0.1:0']);
    procs.push(echo);
    gw = await gateway(['--echo', `127.0.0.1:${echo.port}`, '--ws-ping', '300ms', '--ws-pong-timeout', '3s',
      '--ws-max-message', '1M', '--chat-listen', '127.0.0.1:0']);
    ws = `ws://127.0.0.1:${gw.port}/api/v1/ws/echo`;
  });
  if (!ok) throw new Error('no gateway');

  await step('small binary message: echoed upper-cased, as one binary message', async () => {
    const conn = await open(ws, ['binary']);
    conn.ws.send(Buffer.from('hello, socket'));
    const got = await collect(conn, 13);
    assert.equal(got.toString(), 'HELLO, SOCKET');
    assert.equal(conn.messages[0].isBinary, true);
    conn.ws.close(1000, 'done');
    const how = await within('close', conn.closed);
    assert.equal(how.code, 1000, 'the gateway answers a close with the same code');
  });

  await step('no subprotocol offered: binary framing, no Sec-WebSocket-Protocol chosen', async () => {
    const conn = await open(ws, []);
    assert.equal(conn.protocol, '');
    conn.ws.send(Buffer.from('abc'));
    assert.equal((await collect(conn, 3)).toString(), 'ABC');
    conn.ws.close();
  });

  await step('1 MiB binary message (the limit exactly) round trip', async () => {
    await echoRoundTrip(ws, 'binary', randomBytes(MiB));
  });

  await step('base64 subprotocol (websockify\'s): 64 KiB round trip', async () => {
    await echoRoundTrip(ws, 'base64', randomBytes(64 * 1024));
  });

  await step('fragmented message (three frames) arrives as one message', async () => {
    const conn = await open(ws, ['binary']);
    conn.ws.send(Buffer.from('frag'), { fin: false });
    conn.ws.send(Buffer.from('men'), { fin: false });
    conn.ws.send(Buffer.from('ted'), { fin: true });
    assert.equal((await collect(conn, 10)).toString(), 'FRAGMENTED');
    conn.ws.close();
  });

  await step('text subprotocol: 120 KB of multi-byte UTF-8 comes back as valid text messages', async () => {
    const text = 'añ✓😀'.repeat(12000); // 1, 2, 3 and 4-byte sequences, cut wherever the reads fall
    const conn = await open(ws, ['text']);
    assert.equal(conn.protocol, 'text');
    conn.ws.send(text);
    const bytes = Buffer.byteLength(text);
    const got = await collect(conn, bytes);
    assert.ok(conn.messages.every((m) => !m.isBinary), 'every message is text');
    // ws closes with 1007 on a text message that is not UTF-8: every piece was whole.
    assert.equal(got.toString(), text.replace(/a/g, 'A'));
    conn.ws.close();
  });

  await step('ping from the client gets a pong; the gateway pings every 300 ms', async () => {
    const conn = await open(ws, ['binary']);
    const pong = new Promise((resolve) => conn.ws.once('pong', (d) => resolve(d.toString())));
    conn.ws.ping('are you there');
    assert.equal(await within('pong', pong), 'are you there');
    await within('a ping from the gateway', new Promise((resolve) => conn.ws.once('ping', resolve)));
    conn.ws.close();
  });

  await step('a client that never answers pings is dropped (pong deadline)', async () => {
    const raw = await rawOpen(gw.port, '/api/v1/ws/echo');
    await within('the socket to be dropped', raw.ended);
    assert.equal(raw.rest.bytes[0], 0x89, 'the first frame the gateway sent is a ping');
  });

  await step('close codes: the client\'s 4001 is answered with 4001', async () => {
    const conn = await open(ws, ['binary']);
    conn.ws.close(4001, 'app says bye');
    const how = await within('close', conn.closed);
    assert.equal(how.code, 4001);
  });

  await step('a message over --ws-max-message closes with 1009', async () => {
    const conn = await open(ws, ['binary']);
    conn.ws.send(Buffer.alloc(MiB + 1, 0x31));
    const how = await within('close', conn.closed);
    assert.equal(how.code, 1009);
  });

  await step('a foreign Origin is refused with 403 before the upgrade', async () => {
    await assert.rejects(open(ws, ['binary'], { origin: 'http://evil.example' }), (err) => err.status === 403);
    // The gateway's own origin is welcome.
    const conn = await open(ws, ['binary'], { origin: `http://127.0.0.1:${gw.port}` });
    conn.ws.close();
  });

  await step('a plain GET (no handshake) gets 426; a wrong version gets 426', async () => {
    const res = await fetch(`http://127.0.0.1:${gw.port}/api/v1/ws/echo`);
    assert.equal(res.status, 426);
    assert.equal((await res.json()).error.code, 'upgrade_required');
    await assert.rejects(rawOpen(gw.port, '/api/v1/ws/echo', { 'Sec-WebSocket-Version': '8' }), /HTTP\/1\.1 426/);
  });

  await step('a client that stops reading does not grow the gateway (backpressure to the backend and back)', async () => {
    const raw = await rawOpen(gw.port, '/api/v1/ws/echo', { 'Sec-WebSocket-Protocol': 'binary' });
    raw.socket.pause(); // reads nothing from here on: the echo piles up towards the client
    const before = rssKiB(gw.pid);
    const frame = clientFrame(2, Buffer.alloc(256 * 1024, 0x30));
    const total = 256; // 64 MiB at most, far more than every socket buffer on the way
    let sent = 0;
    for (; sent < total; sent++) {
      if (!raw.socket.write(frame)) {
        // The gateway stops reading once its queues are full: no drain comes while nobody reads.
        const drained = await Promise.race([
          new Promise((resolve) => raw.socket.once('drain', () => resolve(true))),
          new Promise((resolve) => setTimeout(() => resolve(false), 3000)),
        ]);
        if (!drained) break;
      }
    }
    const after = rssKiB(gw.pid);
    console.log(`     wrote ${sent} of ${total} frames of 256 KiB; gateway VmRSS ${before} -> ${after} KiB`);
    assert.ok(sent < total, 'the gateway stopped taking data from a client that does not read');
    assert.ok(after - before < 24 * 1024, `VmRSS grew by ${after - before} KiB (bounded queues keep it under 24 MiB)`);
    raw.socket.destroy();
  });

  // Regression: a socket ended by one descriptor's event was freed while the same epoll batch
  // still held an event for its other descriptor (AddressSanitizer: heap-use-after-free).
  await step('32 sockets at once, 200 round trips each, all closed together mid-echo: the gateway lives on', async () => {
    const conns = await Promise.all(Array.from({ length: 32 }, () => open(ws, ['binary'])));
    await Promise.all(conns.map(async (conn) => {
      for (let i = 0; i < 200; i++) {
        conn.messages.length = 0;
        conn.ws.send(Buffer.from('ping-0123'));
        await collect(conn, 9);
      }
    }));
    // Closed with echoes streaming, so the backend's event and the client's close meet in one
    // epoll batch (five waves of 32 sockets, each sending 200 small messages unawaited).
    for (const conn of conns) {
      for (let i = 0; i < 200; i++) conn.ws.send(Buffer.from('0123456789'));
      conn.ws.close(1000);
    }
    await Promise.all(conns.map((c) => within('close', c.closed)));
    for (let wave = 0; wave < 4; wave++) {
      const more = await Promise.all(Array.from({ length: 32 }, () => open(ws, ['binary'])));
      for (const conn of more) {
        for (let i = 0; i < 200; i++) conn.ws.send(Buffer.from('0123456789'));
        conn.ws.close(1000);
      }
      await Promise.all(more.map((c) => within('close', c.closed)));
    }
    const res = await fetch(`http://127.0.0.1:${gw.port}/healthz`);
    assert.equal(res.status, 200);
    assert.equal(gw.child.exitCode, null, 'the gateway is still running');
  });

  await step('/metrics counts the sockets and their bytes', async () => {
    assert.ok(await metric(gw.port, 'sockgate_websockets_total') >= 10);
    assert.ok(await metric(gw.port, 'sockgate_websocket_bytes_total{direction="in"}') >= MiB);
    assert.ok(await metric(gw.port, 'sockgate_websocket_messages_total{direction="out"}') >= 10);
    assert.ok(await metric(gw.port, 'sockgate_http_requests_total{route="ws_echo",status="101"}') >= 10,
      'every closed socket is one request with status 101');
  });

  await step('chat: the subscription\'s events and a reply, as JSON text messages', async () => {
    const ready = await (await fetch(`http://127.0.0.1:${gw.port}/readyz`)).json();
    const chatAddr = ready.backends.chat.address;
    const [host, port] = [chatAddr.slice(0, chatAddr.lastIndexOf(':')), Number(chatAddr.slice(chatAddr.lastIndexOf(':') + 1))];
    const conn = await open(`ws://127.0.0.1:${gw.port}/api/v1/ws/chat`, ['sockgate.chat.v1']);
    assert.equal(conn.protocol, 'sockgate.chat.v1');
    const events = () => conn.messages.map((m) => JSON.parse(m.data.toString()));
    await within('subscribed', (async () => { while (!events().length) await new Promise((r) => setTimeout(r, 20)); })());
    assert.equal(events()[0].event, 'subscribed');
    const udp = dgram.createSocket('udp4');
    const replies = [];
    udp.on('message', (m) => replies.push(m.toString()));
    await new Promise((resolve) => udp.bind(0, '127.0.0.1', resolve));
    const me = `127.0.0.1:${udp.address().port}`;
    udp.send(Buffer.from('hi from udp'), port, host);
    const end = Date.now() + WAIT_MS;
    let msg;
    while (!(msg = events().find((e) => e.event === 'message' && e.data.text === 'hi from udp'))) {
      if (Date.now() > end) throw new Error(`no message event: ${JSON.stringify(events())}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(msg.data.from, me);
    conn.ws.send(JSON.stringify({ op: 'reply', to: me, text: 'hello udp', ref: 7 }));
    while (!events().find((e) => e.event === 'reply' && e.ref === 7)) {
      if (Date.now() > end) throw new Error(`no reply event: ${JSON.stringify(events())}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    while (!replies.some((r) => r.includes('hello udp'))) {
      if (Date.now() > end) throw new Error('the reply did not reach the UDP client');
      await new Promise((r) => setTimeout(r, 20));
    }
    conn.ws.send('{"op": "nonsense", "ref": "x"}');
    while (!events().find((e) => e.event === 'error' && e.ref === 'x')) {
      if (Date.now() > end) throw new Error('no error event for a bad command');
      await new Promise((r) => setTimeout(r, 20));
    }
    conn.ws.send(JSON.stringify({ op: 'peers', ref: 'p' }));
    let peers;
    while (!(peers = events().find((e) => e.event === 'peers' && e.ref === 'p'))) {
      if (Date.now() > end) throw new Error('no peers event');
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(JSON.stringify(peers.data).includes(me), `the peer list names ${me}: ${JSON.stringify(peers.data)}`);
    udp.close();
    conn.ws.send(Buffer.from('not json'));
    const how = await within('close', conn.closed);
    assert.equal(how.code, 1003, 'a binary message closes the chat socket with 1003');
  });

  await step('the echo backend killed: the socket closes with 1011', async () => {
    const conn = await open(ws, ['binary']);
    conn.ws.send(Buffer.from('x'));
    await collect(conn, 1);
    await echo.kill();
    const how = await within('close', conn.closed);
    assert.equal(how.code, 1011);
  });

  await step('with the echo backend down the upgrade is an HTTP error, not a socket', async () => {
    await assert.rejects(open(ws, ['binary']), (err) => err.status >= 500);
  });

  await step('SIGTERM with a socket open: the client gets 1001 and the gateway exits 0', async () => {
    const g = await gateway(['--chat-listen', '127.0.0.1:0']);
    const conn = await open(`ws://127.0.0.1:${g.port}/api/v1/ws/echo`, ['binary']);
    const exit = g.stop();
    const how = await within('close', conn.closed);
    assert.equal(how.code, 1001);
    assert.equal((await exit).code, 0, g.log());
  });

  await step('--ws-idle-timeout: a socket without messages either way is closed with 1001', async () => {
    const g = await gateway(['--ws-idle-timeout', '500ms', '--ws-ping', '0']);
    const conn = await open(`ws://127.0.0.1:${g.port}/api/v1/ws/echo`, ['binary']);
    conn.ws.send('x');
    await collect(conn, 1);
    const how = await within('the idle close', conn.closed);
    assert.deepEqual(how, { code: 1001, reason: 'idle timeout' });
  });

  await step('token: refused without it (401), taken as the bearer.TOKEN subprotocol or the header', async () => {
    const g = await gateway(['--token', 's3cret-token']);
    const url = `ws://127.0.0.1:${g.port}/api/v1/ws/echo`;
    await assert.rejects(open(url, ['binary']), (err) => err.status === 401);
    await assert.rejects(open(url, ['binary', 'bearer.wrong']), (err) => err.status === 401);
    const a = await open(url, ['binary', 'bearer.s3cret-token']);
    assert.equal(a.protocol, 'binary', 'the token is never echoed as the chosen subprotocol');
    a.ws.send('q');
    assert.equal((await collect(a, 1)).toString(), 'Q');
    a.ws.close();
    const b = await open(url, ['binary'], { headers: { Authorization: 'Bearer s3cret-token' } });
    b.ws.close();
  });

  // libmicrohttpd 0.9.75 relays an upgraded TLS connection through buffers of 4 bytes (its write
  // buffer takes the whole connection pool before the upgrade): correct, but about 125 KB/s
  // (docs/internals/gateway.md "WebSockets"), so this round trip is 64 KiB.
  await step('wss:// (HTTPS): 64 KiB round trip through libmicrohttpd\'s TLS relay', async () => {
    const tls = selfSigned(tmp);
    const g = await gateway(['--tls-cert', tls.cert, '--tls-key', tls.key]);
    const url = `wss://127.0.0.1:${g.port}/api/v1/ws/echo`;
    const conn = await open(url, ['binary'], { ca: fs.readFileSync(tls.cert) });
    const buf = randomBytes(64 * 1024);
    conn.ws.send(buf);
    const got = await collect(conn, buf.length);
    assert.ok(got.equals(upper(buf)));
    conn.ws.close(1000);
    assert.equal((await within('close', conn.closed)).code, 1000);
  });

  await step('websockify (Debian) and sockgate answer the same client code alike', async () => {
    const echo2 = await startProgram('sockgate-echo', ['--listen', '127.0.0.1:0']);
    procs.push(echo2);
    const g = await gateway(['--echo', `127.0.0.1:${echo2.port}`]);
    const wsPort = await freePort();
    const wfy = spawn('websockify', [`127.0.0.1:${wsPort}`, `127.0.0.1:${echo2.port}`], { stdio: 'ignore' });
    procs.push({ stop: async () => { wfy.kill('SIGTERM'); } });
    await waitForPort(wsPort);
    for (const [name, url] of [['websockify', `ws://127.0.0.1:${wsPort}/`],
      ['sockgate', `ws://127.0.0.1:${g.port}/api/v1/ws/echo`]]) {
      // websockify 0.10 refuses base64 ("Invalid protocol selected"); older clients still ask sockgate for it.
      for (const protocol of name === 'websockify' ? ['binary'] : ['binary', 'base64']) {
        for (const size of [5, 300 * 1024]) {
          await echoRoundTrip(url, protocol, randomBytes(size)).catch((e) => {
            throw new Error(`${name}, ${protocol}, ${size} bytes: ${e.message}`);
          });
        }
      }
    }
  });

  // websockify's own Python client class (websockify.websocket) cannot send in Debian's 0.10: its
  // masking adds an int to bytes (TypeError) under Python 3, so the Node client above stands for it.
} finally {
  for (const p of procs.reverse()) await p.stop().catch(() => {});
  fs.rmSync(tmp, { recursive: true, force: true });
}

process.exit(summary());
