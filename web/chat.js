// The chat panel: live messages from UDP chat clients grouped by peer, and the operator's reply,
// both over one WebSocket (/api/v1/ws/chat); the SSE stream stays for curl.

import { api, authHeader, describeError, el } from './api.js';

// How many messages each peer's thread keeps on the page; older ones scroll away.
const THREAD_LIMIT = 200;

let stateNode;
let bodyNode;
let threadsNode;
let form;
let toSelect;
let textInput;
let replyStatus;
let source = null;
let phase = 'idle';
// The highest seq shown: a reconnecting socket asks for what came after it.
let lastSeq = 0;
// Replies sent over the socket, by ref, waiting for their "reply" or "error" event.
const pending = new Map();
let nextRef = 1;
// After the socket drops, it is opened again this long later (not after a refusal: see RETRY_MS).
const RECONNECT_MS = 2000;
// After a failed attempt the page waits this long before asking again, so a gateway whose
// readiness says "up" while the chat routes fail is not asked (and logged) every few seconds.
const RETRY_MS = 60000;
let retryAt = 0;
// The last backend states chatOnReadiness got (undefined before the first /readyz answer).
let lastBackends;
const threads = new Map();
// Sequence numbers already shown, so a replay after a reconnect never shows a message twice.
const seen = new Set();

/** Wires the chat panel; it stays in "checking" until chatOnReadiness tells it more. */
export function chatInit() {
  stateNode = document.getElementById('chat-state');
  bodyNode = document.getElementById('chat-body');
  threadsNode = document.getElementById('chat-threads');
  form = document.getElementById('chat-form');
  toSelect = document.getElementById('chat-to');
  textInput = document.getElementById('chat-text');
  replyStatus = document.getElementById('chat-reply-status');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    sendReply();
  });
  setState('Checking whether this gateway has a chat service…', false);
}

function setState(text, isError) {
  stateNode.textContent = text;
  stateNode.classList.toggle('is-error', Boolean(isError));
}

/**
 * Takes the backends' states from /readyz (null when /readyz did not list them) and connects,
 * or says why chat is unavailable, without requests that would fail: a browser logs every
 * failed request to its console, so the page only asks for chat routes once chat is known up.
 */
export function chatOnReadiness(backends) {
  lastBackends = backends;
  showAddress(backends && backends.get('chat'));
  if (phase === 'connecting' || phase === 'live' || phase === 'forgotten') return;
  if (backends && (!backends.has('chat') || !backends.get('chat').configured)) {
    showUnavailable('Chat unavailable: this gateway runs no chat service.');
    return;
  }
  if (backends && !backends.get('chat').ok) {
    showUnavailable('Chat unavailable: the chat backend is down. The page connects when it is back.');
    return;
  }
  if (Date.now() < retryAt) return;
  connect();
}

// Where the tutorial's chat clients send their datagrams: the chat backend's own address, as
// /readyz names it (to a caller with the token, when there is one).
function showAddress(chat) {
  const node = document.getElementById('chat-address');
  const addr = chat && chat.ok && chat.configured && /^[^\s]+:\d+$/.test(chat.detail) ? chat.detail : '';
  node.hidden = !addr;
  if (addr) {
    node.replaceChildren('Chat clients send UDP datagrams to ', el('code', { text: addr }),
      ' (for example ', el('code', { text: `sockgate-cli chat ${addr}` }), ').');
  }
}

function showUnavailable(text) {
  phase = 'unavailable';
  bodyNode.hidden = true;
  setState(text, false);
}

async function connect() {
  phase = 'connecting';
  setState('Connecting to chat…', false);
  let body;
  try {
    body = await api('GET', '/api/v1/chat/peers');
  } catch (err) {
    phase = 'unavailable';
    retryAt = Date.now() + RETRY_MS;
    bodyNode.hidden = true;
    setState(err.status === 404 || err.status === 503
      ? 'Chat unavailable on this gateway right now.'
      : `Chat unavailable: ${describeError(err)}`, false);
    return;
  }
  // The token may have been forgotten while the request was out.
  if (phase !== 'connecting') return;
  // The gateway lists the most recently seen first; threads run oldest to newest, as live ones do.
  for (const peer of peerList(body).reverse()) ensureThread(peer.addr, peer.last);
  bodyNode.hidden = false;
  // A browser's WebSocket cannot send an Authorization header, so with a token the gateway
  // first turns it into an HttpOnly cookie, which it accepts on the chat's socket and stream.
  if (authHeader()) {
    try {
      await api('POST', '/api/v1/session');
    } catch (err) {
      phase = 'unavailable';
      retryAt = Date.now() + RETRY_MS;
      setState(`Chat stream unavailable: ${describeError(err)}`, true);
      return;
    }
    if (phase !== 'connecting') return;
  }
  openStream();
}

/** Connects again after a token was entered: the new token may open what the old one could not. */
export function chatTokenChanged() {
  if (phase === 'connecting' || phase === 'live') return;
  phase = 'idle';
  retryAt = 0;
  // Before the first /readyz answer there is nothing to go on; the status loop connects then.
  if (lastBackends !== undefined) chatOnReadiness(lastBackends);
}

/**
 * Closes the stream and asks the gateway to clear its session cookie once the token is
 * forgotten, so this tab keeps no access; entering a token again reconnects.
 */
export async function chatTokenForgotten() {
  if (source) source.close();
  source = null;
  if (phase === 'live' || phase === 'connecting') {
    setState('Chat closed: the token was forgotten. Enter it again, or reload the page, to reconnect.', false);
  }
  // Without a token a reconnect would only be refused (and logged), so none is tried until
  // a token is entered again.
  phase = 'forgotten';
  try {
    await api('DELETE', '/api/v1/session');
  } catch {
    // Clearing grants nothing; if the gateway cannot be reached the cookie still dies with the browser session.
  }
}

function peerList(body) {
  const raw = body && (Array.isArray(body.peers) ? body.peers : Array.isArray(body) ? body : []);
  return raw.map((p) => (typeof p === 'string'
    ? { addr: p, last: null }
    : { addr: String(p.addr || p.address || p.peer || p.from || ''), last: p.last_seen_ms || null }))
    .filter((p) => p.addr);
}

// Under a token the socket is let in by the session cookie set in connect(); the browser sends
// it with the handshake by itself.
function openStream() {
  if (source) source.close();
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const sock = new WebSocket(`${scheme}://${location.host}/api/v1/ws/chat?after=${lastSeq}`, ['sockgate.chat.v1']);
  let opened = false;
  source = sock;
  sock.addEventListener('open', () => {
    opened = true;
    phase = 'live';
    setState('Live: new messages appear below.', false);
  });
  sock.addEventListener('message', (event) => {
    let ev;
    try {
      ev = JSON.parse(String(event.data));
    } catch {
      return;
    }
    if (!ev) return;
    if (ev.event === 'subscribed') subscribed(ev.data);
    else if (ev.event === 'message') receive(ev.data);
    else if ((ev.event === 'reply' || ev.event === 'error') && pending.has(ev.ref)) {
      pending.get(ev.ref)(ev);
      pending.delete(ev.ref);
    }
  });
  sock.addEventListener('close', (event) => {
    if (source !== sock) return;
    source = null;
    for (const settle of pending.values()) settle({ event: 'error', error: { message: 'the chat socket closed' } });
    pending.clear();
    if (phase === 'forgotten') return;
    if (!opened) {
      // Refused at the handshake (a 401, say): asked again in a minute, not in a loop.
      phase = 'unavailable';
      retryAt = Date.now() + RETRY_MS;
      setState(authHeader()
        ? 'Chat socket refused: the gateway did not accept this tab\'s session for the token. '
          + 'It is retried in a minute; replies still work.'
        : 'Chat socket refused by the gateway. It is retried when /readyz next reports chat up.', true);
      return;
    }
    phase = 'connecting';
    setState(`Chat socket interrupted (${event.code}), reconnecting (no message is lost)…`, true);
    setTimeout(() => {
      if (phase === 'connecting' && !source) openStream();
    }, RECONNECT_MS);
  });
}

// The service's acknowledgement, first on every (re)connection. "reset" means its sequence
// numbers restarted (a new run of the service), so numbers already shown may come again for
// new messages: the dedupe set starts afresh. "missed" counts messages history no longer held.
function subscribed(ack) {
  if (!ack) return;
  if (ack.reset === true) {
    seen.clear();
    lastSeq = 0;
  }
  if (Number(ack.missed) > 0) {
    setState(`Live: ${ack.missed} earlier message(s) were no longer held by the chat service.`, false);
  }
}

function receive(msg) {
  if (!msg) return;
  // "in" is a datagram a peer sent; "out" is a reply the service sent (from this page or another).
  const isOut = msg.kind === 'out';
  const peer = String((isOut ? msg.to : msg.from) || msg.peer || msg.addr || '');
  const text = String(msg.text !== undefined ? msg.text : msg.message || '');
  const seq = String(msg.seq !== undefined ? msg.seq : '');
  if (Number(msg.seq) > lastSeq) lastSeq = Number(msg.seq);
  if (!peer) return;
  if (seq) {
    if (seen.has(seq)) return;
    seen.add(seq);
  }
  addMessage(peer, { text, timeMs: msg.time_ms, seq, mine: isOut });
}

function ensureThread(addr, last) {
  let thread = threads.get(addr);
  if (thread) return thread;
  const list = el('ol', { class: 'chat-messages', 'aria-label': `Messages with ${addr}` });
  const node = el('li', { class: 'chat-thread', 'data-peer': addr },
    el('h3', { class: 'chat-peer', text: addr }), list);
  if (last) node.title = `last wrote ${formatTime(last)}`;
  threadsNode.append(node);
  thread = { node, list };
  threads.set(addr, thread);
  toSelect.append(el('option', { value: addr, text: addr }));
  toSelect.disabled = false;
  document.getElementById('chat-empty').hidden = true;
  return thread;
}

// The chat service stamps messages in Unix milliseconds; plain seconds are accepted as well.
// Every time the API gives is Unix milliseconds, in a field whose name ends in _ms.
function formatTime(ms) {
  const date = new Date(Number(ms));
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleTimeString();
}

function addMessage(addr, msg) {
  const thread = ensureThread(addr, null);
  const when = msg.timeMs ? formatTime(msg.timeMs) : new Date().toLocaleTimeString();
  thread.list.append(el('li', { class: msg.mine ? 'chat-msg mine' : 'chat-msg', 'data-seq': msg.seq || undefined },
    // The thread's heading already names the peer; only the replies sent to it are marked.
    msg.mine ? el('span', { class: 'chat-who', text: 'reply' }) : null,
    el('span', { class: 'chat-when', text: when }),
    el('span', { class: 'chat-text', text: msg.text })));
  while (thread.list.children.length > THREAD_LIMIT) thread.list.firstElementChild.remove();
  // The thread with the latest message goes last, live as after a reload.
  if (threadsNode.lastElementChild !== thread.node) threadsNode.append(thread.node);
  // The peer who wrote last is the one an operator most likely answers.
  if (!msg.mine) toSelect.value = addr;
}

async function sendReply() {
  const to = toSelect.value;
  const text = textInput.value;
  if (!to || !text) return;
  replyStatus.textContent = 'Sending…';
  replyStatus.classList.remove('is-error');
  try {
    if (source && source.readyState === WebSocket.OPEN) {
      const ref = nextRef++;
      const answer = await new Promise((settle) => {
        pending.set(ref, settle);
        source.send(JSON.stringify({ op: 'reply', to, text, ref }));
      });
      if (answer.event === 'error') {
        throw Object.assign(new Error(answer.error && answer.error.message ? answer.error.message : 'refused'),
          { code: answer.error && answer.error.code });
      }
    } else {
      await api('POST', '/api/v1/chat/reply', { to, text });
    }
    // A live stream brings the reply back as an "out" message; without one it is shown here.
    if (phase !== 'live') addMessage(to, { text, timeMs: null, seq: null, mine: true });
    textInput.value = '';
    replyStatus.textContent = `Sent to ${to}.`;
  } catch (err) {
    replyStatus.textContent = describeError(err);
    replyStatus.classList.add('is-error');
  }
}
