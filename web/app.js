// The page's entry point: the status strip, the token form, echo, time and exec.

import {
  api, authHeader, describeError, setUnauthorizedHandler, showResult, tokenGet, tokenSet,
} from './api.js';
import { filesInit, filesRefresh } from './files.js';
import {
  chatInit, chatOnReadiness, chatTokenChanged, chatTokenForgotten,
} from './chat.js';

// How often the status strip asks /readyz; paused while the page is hidden.
const STATUS_EVERY_MS = 5000;

const $ = (id) => document.getElementById(id);

// Screen readers hear short status changes (upload done, file deleted) through one live region.
function announce(text) {
  const region = $('announce');
  region.textContent = '';
  // A new text node in a later task makes the same message heard twice in a row.
  setTimeout(() => { region.textContent = text; }, 50);
}

// States that mean a backend answered its health round trip.
const OK_STATES = new Set(['ok', 'up', 'ready', 'healthy', 'true', 'pass', 'reachable']);

// /readyz lists each backend with its state; this accepts the shapes a JSON API tends to take:
// {"backends": {"echo": {"state": "up"}}}, {"backends": [{"name", "state"}]} or {"echo": "up"}.
function readinessMap(body) {
  const map = new Map();
  if (!body || typeof body !== 'object') return null;
  const source = body.backends || body.checks || body.services || body;
  const add = (name, value) => {
    let state = value;
    let detail = '';
    if (value && typeof value === 'object') {
      state = value.state !== undefined ? value.state : value.status !== undefined ? value.status : value.ok;
      detail = value.error || value.message || value.address || value.addr || '';
      if (typeof detail === 'object') detail = detail.message || JSON.stringify(detail);
    }
    const text = String(state);
    // A backend the gateway was built or started without is absent, not broken.
    const configured = !(value && typeof value === 'object' && value.configured === false);
    map.set(name, {
      ok: state === true || OK_STATES.has(text.toLowerCase()), configured, text, detail: String(detail),
    });
  };
  if (Array.isArray(source)) {
    for (const item of source) if (item && item.name) add(String(item.name), item);
  } else {
    for (const [name, value] of Object.entries(source)) {
      if (source === body && ['status', 'ready', 'version', 'details'].includes(name)) continue;
      if (value !== null && (typeof value === 'object' || typeof value === 'string' || typeof value === 'boolean')) {
        add(name, value);
      }
    }
  }
  return map.size ? map : null;
}

function renderStatus(map, problem) {
  const strip = $('status');
  if (!map) {
    strip.replaceChildren(statusItem('gateway', { ok: false, configured: true, text: problem || 'unknown', detail: '' }));
    return;
  }
  strip.replaceChildren(...Array.from(map, ([name, s]) => statusItem(name, s)));
}

function statusItem(name, { ok, configured, text, detail }) {
  const item = document.createElement('li');
  item.className = !configured ? 'state is-off' : ok ? 'state is-up' : 'state is-down';
  item.dataset.backend = name;
  const label = document.createElement('span');
  label.className = 'state-name';
  label.textContent = name;
  const value = document.createElement('span');
  value.className = 'state-value';
  value.textContent = !configured ? 'not configured' : ok ? 'up' : text === 'false' ? 'down' : text;
  item.append(label, value);
  if (detail) item.title = detail;
  return item;
}

// /readyz answers 503 when a backend is down, with the same JSON body, so the body is read
// whatever the status.
// With --token, /readyz tells each backend's state only to a caller with the token.
async function refreshStatus() {
  let map = null;
  let verdict = null;
  let problem = '';
  try {
    const headers = { Accept: 'application/json' };
    if (authHeader()) headers.Authorization = authHeader();
    const response = await fetch('/readyz', { cache: 'no-store', headers });
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      map = readinessMap(body);
      // Only the verdict (no token yet): one item for the gateway, saying how to learn more.
      if (!map && typeof body.ready === 'boolean') {
        verdict = new Map([['gateway', {
          ok: body.ready, configured: true, text: body.ready ? 'up' : 'down', detail: body.details || '',
        }]]);
      }
    } catch {
      problem = `HTTP ${response.status}`;
    }
    if (!map && !problem) problem = response.ok ? 'ready' : `HTTP ${response.status}`;
  } catch {
    problem = 'unreachable';
  }
  $('status-time').textContent = `checked ${new Date().toLocaleTimeString()}`;
  renderStatus(map || verdict, problem);
  // With the gateway unreachable there is nothing to learn about chat; ask again next time.
  if (problem !== 'unreachable') chatOnReadiness(map);
}

function startStatusLoop() {
  let timer = null;
  const tick = async () => {
    timer = null;
    await refreshStatus();
    if (!document.hidden) timer = setTimeout(tick, STATUS_EVERY_MS);
  };
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && timer === null) tick();
  });
  tick();
}

// The token form appears the first time the gateway answers 401 and hides once a call works.
function tokenInit() {
  const panel = $('token-panel');
  const form = $('token-form');
  const input = $('token-input');
  const error = $('token-error');
  const forget = $('token-forget');
  forget.hidden = !tokenGet();
  setUnauthorizedHandler(() => {
    const wasHidden = panel.hidden;
    panel.hidden = false;
    error.textContent = tokenGet() ? 'The gateway refused this token. Enter the right one.' : '';
    if (wasHidden) input.focus();
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    tokenSet(token);
    input.value = '';
    forget.hidden = false;
    panel.hidden = true;
    // Chat first: it sets the session cookie for its event stream before opening it.
    chatTokenChanged();
    execAllowedRefresh();
    await filesRefresh();
  });
  forget.addEventListener('click', () => {
    tokenSet('');
    forget.hidden = true;
    announce('Token forgotten');
    // Also clears the gateway's session cookie, which outlives the token in sessionStorage.
    chatTokenForgotten();
  });
}

// The live socket: a WebSocket to the echo service (text subprotocol), open while the box is
// ticked. Under a token the gateway's session cookie lets it in (a browser's WebSocket cannot
// send Authorization), so the token is first traded for the cookie, as the chat does.
let echoSocket = null;

function echoSocketUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/v1/ws/echo`;
}

async function echoSocketOpen(state, out) {
  state.textContent = 'Opening the live socket…';
  if (authHeader()) {
    try {
      await api('POST', '/api/v1/session');
    } catch (err) {
      state.textContent = `Live socket unavailable: ${describeError(err)}`;
      $('echo-live').checked = false;
      return;
    }
  }
  if (!$('echo-live').checked) return;
  const sock = new WebSocket(echoSocketUrl(), ['text']);
  echoSocket = sock;
  let reply = '';
  sock.addEventListener('open', () => {
    state.textContent = 'Live: messages go over one WebSocket, replies stream back.';
  });
  sock.addEventListener('message', (event) => {
    reply += String(event.data);
    showResult(out, reply, false);
  });
  sock.addEventListener('close', (event) => {
    if (echoSocket !== sock) return;
    echoSocket = null;
    $('echo-live').checked = false;
    state.textContent = event.code === 1000 || event.code === 1005
      ? 'Each message is one HTTP request.'
      : `Live socket closed (${event.code}${event.reason ? `: ${event.reason}` : ''}); each message is one HTTP request again.`;
  });
  sock.resetReply = () => { reply = ''; };
}

function echoSocketClose(state) {
  if (echoSocket) {
    const sock = echoSocket;
    echoSocket = null;
    sock.close(1000);
  }
  state.textContent = 'Each message is one HTTP request.';
}

function echoInit() {
  const form = $('echo-form');
  const out = $('echo-reply');
  const live = $('echo-live');
  const state = $('echo-live-state');
  live.addEventListener('change', () => {
    if (live.checked) echoSocketOpen(state, out);
    else echoSocketClose(state);
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const message = $('echo-input').value;
    if (live.checked) {
      if (!echoSocket || echoSocket.readyState !== WebSocket.OPEN) {
        showResult(out, 'The live socket is not open yet', true);
        return;
      }
      echoSocket.resetReply();
      showResult(out, 'Sending…', false);
      echoSocket.send(message);
      return;
    }
    showResult(out, 'Sending…', false);
    try {
      const body = await api('POST', '/api/v1/echo', { message });
      showResult(out, body && typeof body.reply === 'string' ? body.reply : '', false);
    } catch (err) {
      showResult(out, describeError(err), true);
    }
  });
}

function timeInit() {
  const form = $('time-form');
  const input = $('time-format');
  const out = $('time-answer');
  // The time service takes formats of at most 256 bytes of UTF-8; maxlength counts characters.
  const TIME_FORMAT_MAX_BYTES = 256;
  const ask = async () => {
    const bytes = new TextEncoder().encode(input.value).length;
    if (bytes > TIME_FORMAT_MAX_BYTES) {
      showResult(out, `The format is ${bytes} bytes; the time service takes at most ${TIME_FORMAT_MAX_BYTES}`, true);
      return;
    }
    showResult(out, 'Asking…', false);
    try {
      const body = await api('GET', `/api/v1/time?format=${encodeURIComponent(input.value)}`);
      showResult(out, body && body.time !== undefined ? String(body.time) : '', false);
    } catch (err) {
      showResult(out, describeError(err), true);
    }
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    ask();
  });
  for (const button of document.querySelectorAll('[data-format]')) {
    button.addEventListener('click', () => {
      input.value = button.dataset.format;
      ask();
    });
  }
}

// Output that is not UTF-8 arrives base64-encoded; the page says so instead of showing noise.
function outputText(body, name) {
  if (typeof body[name] === 'string') return body[name];
  const b64 = body[`${name}_base64`];
  if (typeof b64 === 'string') {
    const bytes = Math.floor((b64.replace(/=+$/, '').length * 3) / 4);
    return `(${bytes} bytes of binary output, not shown)`;
  }
  return '';
}

// Lists the commands the gateway's exec backend may run, under the command box.
async function execAllowedRefresh() {
  const hint = $('exec-allowed');
  try {
    const body = await api('GET', '/api/v1/exec/allowed');
    if (body && Array.isArray(body.allowed)) {
      hint.textContent = `Allowed here: ${body.allowed.join(', ')}`;
    } else {
      hint.textContent = body && body.why ? `The allowed commands are not known here: ${body.why}.` : '';
    }
  } catch {
    // Without the token (or the route) the panel still works; the list stays unsaid.
    hint.textContent = '';
  }
}

// Copies a stream's text: the clipboard API where the page may use it, else a selection and execCommand.
async function copyText(button, node) {
  const text = node.textContent;
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    ok = document.execCommand('copy');
  }
  button.textContent = ok ? 'Copied' : 'Select and copy';
  setTimeout(() => { button.textContent = 'Copy'; }, 2000);
}

function execInit() {
  const form = $('exec-form');
  const status = $('exec-status');
  const stdout = $('exec-stdout');
  const stderr = $('exec-stderr');
  const result = $('exec-result');
  for (const button of document.querySelectorAll('[data-copy]')) {
    button.addEventListener('click', () => copyText(button, $(button.dataset.copy)));
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const command = $('exec-command').value.trim();
    if (!command) return;
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    showResult(status, `Running ${command}…`, false);
    result.hidden = true;
    try {
      const request = { command };
      const limit = Number($('exec-timeout').value);
      if ($('exec-timeout').value !== '' && Number.isInteger(limit) && limit > 0) request.timeout_ms = limit;
      const body = await api('POST', '/api/v1/exec', request);
      const parts = [`Exit code ${body.exit_code}`];
      if (body.signal) parts.push(`killed by signal ${body.signal}`);
      if (typeof body.duration_ms === 'number') parts.push(`${body.duration_ms} ms`);
      let isError = body.exit_code !== 0;
      if (body.timed_out) {
        parts.unshift('Timed out: the command was stopped at its time limit');
        isError = true;
      }
      if (body.truncated) parts.push('output truncated at the gateway\'s limit');
      showResult(status, parts.join(' · '), isError);
      stdout.textContent = outputText(body, 'stdout');
      stderr.textContent = outputText(body, 'stderr');
      // An empty stream is not shown: an empty red box reads as an error that is not there.
      $('exec-stdout-stream').hidden = stdout.textContent === '' && stderr.textContent !== '';
      $('exec-stderr-stream').hidden = stderr.textContent === '';
      result.hidden = false;
    } catch (err) {
      showResult(status, describeError(err), true);
    } finally {
      button.disabled = false;
    }
  });
}

function main() {
  tokenInit();
  echoInit();
  timeInit();
  execInit();
  filesInit(announce);
  chatInit();
  startStatusLoop();
  filesRefresh();
  execAllowedRefresh();
}

main();
