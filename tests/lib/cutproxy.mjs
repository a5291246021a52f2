// A TCP proxy on loopback whose target can change (a restarted gateway) and which can cut one
// connection after a number of client bytes: a link that drops in the middle of a PATCH.

import net from 'node:net';

/**
 * Listens on 127.0.0.1:0 and forwards every connection to 127.0.0.1:target. Resolves with
 * { port, setTarget(port), cutAfter(n): the next connection that carries more than n request bytes
 * is destroyed at byte n (both sides), cutDone: a promise of the cut, close() }.
 */
export function startCutProxy(target) {
  let armed = null;
  let onCut = null;
  let holdAt = null;
  let onHold = null;
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    let sent = 0;
    let held = false;
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('data', (chunk) => {
      if (armed !== null && sent + chunk.length > armed) {
        const keep = armed - sent;
        armed = null;
        upstream.write(chunk.subarray(0, keep), () => {
          drop();
          if (onCut) onCut(sent + keep);
        });
        return;
      }
      if (holdAt !== null && sent + chunk.length > holdAt) {
        // Forward exactly up to the mark, then stop reading the client: nothing more reaches the server.
        const keep = holdAt - sent;
        holdAt = null;
        held = true;
        client.pause();
        upstream.write(chunk.subarray(0, keep), () => {
          if (onHold) onHold(sent + keep);
        });
        sent += keep;
        return;
      }
      sent += chunk.length;
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on('drain', () => {
      if (!held) client.resume();
    });
    upstream.on('data', (chunk) => {
      if (!client.write(chunk)) upstream.pause();
    });
    client.on('drain', () => upstream.resume());
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: server.address().port,
        setTarget(port) {
          target = port;
        },
        /** Forwards n request bytes of a connection, then holds the rest (the connection stays open). */
        holdAfter(n) {
          holdAt = n;
          return new Promise((res) => {
            onHold = res;
          });
        },
        cutAfter(n) {
          armed = n;
          return new Promise((res) => {
            onCut = res;
          });
        },
        close() {
          for (const s of sockets) s.destroy();
          return new Promise((res) => server.close(() => res()));
        },
      });
    });
  });
}
