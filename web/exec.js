// The Exec panel: a command's output shown as it is written (fetch with a ReadableStream over
// NDJSON; EventSource cannot POST), a Stop button, the elapsed time, the exit code at the end.

import {
  ApiError, api, authHeader, describeError, errorFromBody, reportUnauthorized, showResult,
} from './api.js';

// Lines an output pane keeps; older ones are dropped (and the pane says so), so a command that
// writes millions of lines keeps the page fast.
export const MAX_LINES = 10000;
// How often the elapsed time moves while a command runs.
const TICK_MS = 100;

const $ = (id) => document.getElementById(id);

/** One output pane (stdout or stderr): the last MAX_LINES lines, redrawn at most once a frame. */
class Pane {
  constructor(pre, note) {
    this.pre = pre;
    this.note = note;
    this.clear();
  }

  clear() {
    this.lines = [''];
    this.dropped = 0;
    this.isDirty = false;
    this.pre.textContent = '';
    this.note.hidden = true;
  }

  append(text) {
    const parts = text.split('\n');
    this.lines[this.lines.length - 1] += parts[0];
    for (let i = 1; i < parts.length; i++) this.lines.push(parts[i]);
    // The last element is the line being written ('' after a newline): it does not count.
    const over = this.lines.length - 1 - MAX_LINES;
    if (over > 0) {
      this.lines.splice(0, over);
      this.dropped += over;
    }
    if (!this.isDirty) {
      this.isDirty = true;
      requestAnimationFrame(() => this.draw());
    }
  }

  draw() {
    this.isDirty = false;
    this.pre.textContent = this.lines.join('\n');
    this.note.hidden = this.dropped === 0;
    this.note.textContent = `${this.dropped.toLocaleString('en')} earlier lines were dropped: the page keeps the last ${MAX_LINES.toLocaleString('en')}.`;
  }

  text() {
    if (this.isDirty) this.draw();
    return this.pre.textContent;
  }
}

// Output that is not UTF-8 arrives base64-encoded; the page says so instead of showing noise.
function binaryNote(b64) {
  const bytes = Math.floor((b64.replace(/=+$/, '').length * 3) / 4);
  return `(${bytes} bytes of binary output, not shown)`;
}

/** Lists the commands the gateway's exec backend may run, under the command box. */
export async function execAllowedRefresh() {
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

/**
 * POSTs the request with Accept: application/x-ndjson and calls onEvent with each event object
 * as its line arrives. Resolves when the stream ends; rejects with an ApiError when the gateway
 * refuses (the JSON error of the plain route) or the connection fails, or with the AbortError
 * of `signal`.
 */
async function streamExec(request, signal, onEvent) {
  const headers = { Accept: 'application/x-ndjson', 'Content-Type': 'application/json' };
  const auth = authHeader();
  if (auth) headers.Authorization = auth;
  let response;
  try {
    response = await fetch('/api/v1/exec', {
      method: 'POST', headers, body: JSON.stringify(request), cache: 'no-store', signal,
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', '');
  }
  if (!response.ok) {
    const text = await response.text().catch(() => '');
    if (response.status === 401) reportUnauthorized();
    throw errorFromBody(response.status, text);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = '';
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, 'network', '');
    }
    if (chunk.done) break;
    pending += decoder.decode(chunk.value, { stream: true });
    let end;
    while ((end = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, end);
      pending = pending.slice(end + 1);
      if (line) onEvent(JSON.parse(line));
    }
  }
}

/** Wires the Exec panel. */
export function execInit() {
  const form = $('exec-form');
  const status = $('exec-status');
  const result = $('exec-result');
  const runButton = $('exec-run');
  const stopButton = $('exec-stop');
  const elapsed = $('exec-elapsed');
  const panes = {
    stdout: new Pane($('exec-stdout'), $('exec-stdout-dropped')),
    stderr: new Pane($('exec-stderr'), $('exec-stderr-dropped')),
  };
  let running = null; // { controller, started, timer } while a command runs

  for (const button of document.querySelectorAll('[data-copy]')) {
    button.addEventListener('click', () => copyText(button, $(button.dataset.copy)));
  }
  // An empty stream is not shown: an empty red box reads as an error that is not there.
  const showPanes = () => {
    $('exec-stdout-stream').hidden = panes.stdout.text() === '' && panes.stderr.text() !== '';
    $('exec-stderr-stream').hidden = panes.stderr.text() === '';
  };
  const tick = () => {
    elapsed.textContent = `${((performance.now() - running.started) / 1000).toFixed(1)} s`;
  };

  stopButton.addEventListener('click', () => {
    // Closing the stream is what stops the command: the gateway closes its backend connection,
    // and the exec service kills the command's process group.
    if (running) running.controller.abort();
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const command = $('exec-command').value.trim();
    if (!command || running) return;
    const request = { command };
    const limit = Number($('exec-timeout').value);
    if ($('exec-timeout').value !== '' && Number.isInteger(limit) && limit > 0) request.timeout_ms = limit;
    running = { controller: new AbortController(), started: performance.now(), timer: 0 };
    running.timer = setInterval(tick, TICK_MS);
    tick();
    runButton.disabled = true;
    stopButton.hidden = false;
    elapsed.hidden = false;
    panes.stdout.clear();
    panes.stderr.clear();
    result.hidden = true;
    showResult(status, `Running ${command}…`, false);
    let exit = null;
    let failure = null;
    try {
      await streamExec(request, running.controller.signal, (ev) => {
        if (ev.type === 'stdout' || ev.type === 'stderr') {
          panes[ev.type].append(typeof ev.data === 'string' ? ev.data : `${binaryNote(ev.data_base64 || '')}\n`);
          result.hidden = false;
          showPanes();
        } else if (ev.type === 'exit') {
          exit = ev;
        } else if (ev.type === 'error') {
          failure = new ApiError(502, ev.code, ev.message);
        }
      });
    } catch (err) {
      failure = err;
    } finally {
      clearInterval(running.timer);
      const wasStopped = running.controller.signal.aborted;
      running = null;
      runButton.disabled = false;
      stopButton.hidden = true;
      if (wasStopped) {
        showResult(status, 'Stopped: the command was ended', true);
      } else if (exit) {
        const parts = [`Exit code ${exit.exit_code}`];
        if (exit.signal) parts.push(`killed by signal ${exit.signal}`);
        if (typeof exit.duration_ms === 'number') parts.push(`${exit.duration_ms} ms`);
        let isError = exit.exit_code !== 0;
        if (exit.timed_out) {
          parts.unshift('Timed out: the command was stopped at its time limit');
          isError = true;
        }
        showResult(status, parts.join(' · '), isError);
      } else {
        showResult(status, describeError(failure || new ApiError(0, 'network', '')), true);
      }
      if (exit || wasStopped || panes.stdout.text() !== '' || panes.stderr.text() !== '') {
        showPanes();
        result.hidden = false;
      }
    }
  });
}
