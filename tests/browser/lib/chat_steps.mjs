// The chat panel: with a chat backend, a UDP client's message shows up live and the reply typed
// on the page reaches that client; without one, the panel says chat is unavailable.

import dgram from 'node:dgram';

import { assert, step } from '../../lib/check.mjs';

const WAIT_MS = 15000;

async function readiness(gw) {
  const headers = gw.token ? { Authorization: `Bearer ${gw.token}` } : {};
  const response = await fetch(`${gw.url}/readyz`, { headers });
  const body = await response.json();
  return body && body.backends ? body.backends.chat : undefined;
}

// One UDP chat client, as the tutorial's: sends datagrams to the service, collects the replies.
function udpClient() {
  const socket = dgram.createSocket('udp4');
  const received = [];
  socket.on('message', (msg) => received.push(msg.toString('utf8')));
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => resolve({
      socket,
      received,
      address: `127.0.0.1:${socket.address().port}`,
      send: (text, addr) => new Promise((done, fail) => {
        const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
        socket.send(Buffer.from(text, 'utf8'), port, host, (err) => (err ? fail(err) : done()));
      }),
    }));
  });
}

async function until(fn, what) {
  const end = Date.now() + WAIT_MS;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`not true within ${WAIT_MS} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Waits for the page's chat stream to be live, sends `text` from a fresh UDP client and waits
 * for it in that client's thread on the page; returns the client's address.
 */
export async function chatMessageArrives(page, gw, text) {
  const chat = await readiness(gw);
  assert.ok(chat && chat.ok && chat.address, `chat backend up with an address: ${JSON.stringify(chat)}`);
  await until(async () => /^Live/.test(await page.locator('#chat-state').textContent()), 'the chat stream to be live');
  const client = await udpClient();
  try {
    await client.send(text, chat.address);
    const thread = page.locator(`#chat-threads li[data-peer="${client.address}"]`);
    await thread.waitFor({ timeout: WAIT_MS });
    await until(async () => (await thread.textContent()).includes(text), 'the message on the page');
    return client.address;
  } finally {
    client.socket.close();
  }
}

/** Runs the chat step that fits the gateway: a live exchange, or the "unavailable" state. */
export async function chatSteps(page, gw) {
  const chat = await readiness(gw).catch(() => undefined);
  if (!chat || chat.configured === false) {
    await step('chat panel says chat is unavailable', async () => {
      await until(async () => /Chat unavailable/.test(await page.locator('#chat-state').textContent()),
        'the chat state to say unavailable');
      assert.equal(await page.locator('#chat-body').isVisible(), false);
    });
    return;
  }
  await step('chat: a UDP message appears live and the reply reaches the client', async () => {
    assert.ok(chat.ok, `chat backend not up: ${JSON.stringify(chat)}`);
    assert.ok(chat.address, 'readyz gives the chat backend address');
    await until(async () => /^Live/.test(await page.locator('#chat-state').textContent()), 'the chat stream to be live');
    const client = await udpClient();
    try {
      const text = '发给sockgate: hello from a UDP client';
      await client.send(text, chat.address);
      const thread = page.locator(`#chat-threads li[data-peer="${client.address}"]`);
      await thread.waitFor({ timeout: WAIT_MS });
      await until(async () => (await thread.textContent()).includes(text), 'the message on the page');
      assert.equal(await page.getByLabel('Reply to').inputValue(), client.address);
      await page.locator('#chat-text').fill('hello back from the page');
      await page.getByRole('button', { name: 'Reply', exact: true }).click();
      await until(async () => client.received.includes('hello back from the page'), 'the reply at the UDP client');
      await until(async () => (await thread.textContent()).includes('hello back from the page'), 'the reply in the thread');
    } finally {
      client.socket.close();
    }
  });

  await step('chat: the panel names the UDP address to send to; threads keep their order over a reload', async () => {
    await until(async () => (await page.locator('#chat-address').textContent()).includes(chat.address),
      'the chat address on the page');
    const second = await udpClient();
    try {
      await second.send('a second peer', chat.address);
      await page.locator(`#chat-threads li[data-peer="${second.address}"]`).waitFor({ timeout: WAIT_MS });
    } finally {
      second.socket.close();
    }
    const order = () => page.locator('#chat-threads > li').evaluateAll((items) => items.map((i) => i.dataset.peer));
    const live = await order();
    assert.equal(live[live.length - 1], second.address, `the newest peer comes last live: ${live}`);
    await page.reload();
    await until(async () => /^Live/.test(await page.locator('#chat-state').textContent()), 'the chat stream to be live again');
    await until(async () => (await order()).length === live.length, 'every thread back after the reload');
    assert.deepEqual(await order(), live, 'the same order after a reload as live');
  });
}
