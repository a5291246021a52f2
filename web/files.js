// The files panel: uploads with progress and cancel (big files resumable over tus), the stored
// list, download and delete.

import {
  api, ApiError, authHeader, describeError, el, errorFromBody, formatBytes, reportUnauthorized,
} from './api.js';
import {
  Cancelled, forgetPending, pendingKeyFor, pendingUploads, terminate, TusUpload, TUS_MIN_SIZE,
} from './tus.js';

// How far back the speed shown for an upload looks, so it follows changes without jittering.
const SPEED_WINDOW_MS = 2000;

let panel;
let listNode;
let listStatus;
let uploadsNode;
let announce;
let refreshSeq = 0;

/** Wires the files panel; `announceFn` speaks short status changes to screen readers. */
export function filesInit(announceFn) {
  announce = announceFn;
  panel = document.getElementById('files');
  listNode = document.getElementById('file-list');
  listStatus = document.getElementById('file-list-status');
  uploadsNode = document.getElementById('uploads');
  const input = document.getElementById('file-input');

  input.addEventListener('change', () => {
    uploadAll(input.files);
    // A fresh value lets the person pick the same file again after a cancel.
    input.value = '';
  });
  document.getElementById('file-refresh').addEventListener('click', () => filesRefresh());
  document.getElementById('uploads-clear').addEventListener('click', clearFinished);
  showPending();

  // Drop anywhere on the panel; elsewhere a dropped file must not replace the page.
  let depth = 0;
  panel.addEventListener('dragenter', (event) => {
    if (!hasFiles(event)) return;
    depth++;
    panel.classList.add('is-dropping');
  });
  panel.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) panel.classList.remove('is-dropping');
  });
  panel.addEventListener('dragover', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  });
  panel.addEventListener('drop', (event) => {
    event.preventDefault();
    depth = 0;
    panel.classList.remove('is-dropping');
    if (event.dataTransfer && event.dataTransfer.files.length) uploadAll(event.dataTransfer.files);
  });
  window.addEventListener('dragover', (event) => {
    if (!panel.contains(event.target) && hasFiles(event)) {
      event.preventDefault();
      event.dataTransfer.dropEffect = 'none';
    }
  });
  window.addEventListener('drop', (event) => {
    if (!panel.contains(event.target)) event.preventDefault();
  });
}

function hasFiles(event) {
  return Boolean(event.dataTransfer) && Array.from(event.dataTransfer.types || []).includes('Files');
}

function uploadAll(fileList) {
  for (const file of Array.from(fileList || [])) {
    // A file this browser was sending before a reload continues where the server is: no question.
    const pendingKey = file.size >= TUS_MIN_SIZE ? pendingKeyFor(file) : '';
    if (pendingKey) {
      const row = Array.from(uploadsNode.children).find((item) => item.dataset.pendingKey === pendingKey);
      if (row) row.remove();
      startUpload(file);
    } else if (isStored(file.name)) {
      askReplace(file);
    } else {
      startUpload(file);
    }
  }
}

// After a reload: the uploads this browser had not finished, each with a way to resume or drop it.
// A page cannot reopen a file by itself, so resuming means choosing the same file again.
function showPending() {
  for (const p of pendingUploads()) {
    const discard = el('button', {
      type: 'button', class: 'secondary', text: 'Discard', 'aria-label': `Discard the unfinished upload of ${p.name}`,
    });
    const state = el('span', {
      class: 'upload-state', role: 'status',
      text: `Unfinished: choose ${p.name} again to resume`,
    });
    const item = el('li', { class: 'upload', 'data-name': p.name, 'data-state': 'paused', 'data-pending-key': p.key },
      el('div', { class: 'upload-head' }, el('span', { class: 'upload-name', text: p.name }), discard),
      el('progress', { max: 100, value: p.size > 0 ? Math.floor((Number(p.sent) / p.size) * 100) : 0,
        'aria-label': `Upload of ${p.name}` }),
      el('div', { class: 'upload-meta' },
        el('span', { class: 'upload-numbers', text: `${formatBytes(Number(p.sent) || 0)} of ${formatBytes(p.size)}` }),
        state));
    discard.addEventListener('click', async () => {
      discard.disabled = true;
      forgetPending(p.key);
      try {
        await terminate(p.url);
        item.remove();
        announce(`${p.name}: unfinished upload discarded`);
      } catch (err) {
        state.textContent = describeError(err);
        state.classList.add('is-error');
      }
      updateClearButton();
    });
    uploadsNode.append(item);
  }
  updateClearButton();
}

function isStored(name) {
  return Array.from(listNode.children).some((row) => row.dataset.name === name);
}

// A name already stored is replaced only when the person says so, in the upload's own row.
function askReplace(file) {
  const replace = el('button', { type: 'button', class: 'danger', text: 'Replace', 'aria-label': `Replace ${file.name}` });
  const skip = el('button', { type: 'button', class: 'secondary', text: 'Skip', 'aria-label': `Skip ${file.name}` });
  const item = el('li', { class: 'upload', 'data-name': file.name, 'data-state': 'asking' },
    el('div', { class: 'upload-head' }, el('span', { class: 'upload-name', text: file.name })),
    el('div', { class: 'confirm', role: 'group', 'aria-label': `Replace the stored ${file.name}?` },
      el('span', { class: 'confirm-text', text: `${file.name} is already stored. Replace it?` }), replace, skip));
  uploadsNode.prepend(item);
  replace.addEventListener('click', () => {
    item.remove();
    startUpload(file);
  });
  skip.addEventListener('click', () => {
    item.remove();
    announce(`${file.name}: kept the stored file`);
    document.getElementById('file-input').focus();
  });
  replace.focus();
}

// Upload rows of a file deleted since say so, instead of a stale "Uploaded 100%".
function markDeleted(name) {
  for (const item of Array.from(uploadsNode.children)) {
    if (item.dataset.name !== name || item.dataset.state !== 'done') continue;
    item.dataset.state = 'deleted';
    const state = item.querySelector('.upload-state');
    if (state) state.textContent = 'Uploaded, since deleted';
    const bar = item.querySelector('progress');
    if (bar) bar.classList.add('is-gone');
  }
  updateClearButton();
}

function clearFinished() {
  for (const item of Array.from(uploadsNode.children)) {
    if (item.dataset.state !== 'running' && item.dataset.state !== 'paused') item.remove();
  }
  updateClearButton();
}

function updateClearButton() {
  const finished = Array.from(uploadsNode.children)
    .some((item) => item.dataset.state !== 'running' && item.dataset.state !== 'paused');
  document.getElementById('uploads-clear').hidden = !finished;
}

// One upload: a row with its own bar, numbers and cancel button. A big file goes up with tus
// (resumable), a small one with one PUT.
function startUpload(file) {
  if (file.size >= TUS_MIN_SIZE) startTusUpload(file);
  else startPutUpload(file);
}

// The row of one upload and what updates it: progress(sent) and finish(state, text, isError).
function uploadRow(file, onCancel) {
  const bar = el('progress', { max: 100, value: 0, 'aria-label': `Upload of ${file.name}` });
  const numbers = el('span', { class: 'upload-numbers', text: `0 B of ${formatBytes(file.size)}` });
  const state = el('span', { class: 'upload-state', role: 'status', text: 'Starting' });
  const cancel = el('button', {
    type: 'button', class: 'secondary', text: 'Cancel', 'aria-label': `Cancel upload of ${file.name}`,
    onclick: onCancel,
  });
  const item = el('li', { class: 'upload', 'data-name': file.name, 'data-state': 'running' },
    el('div', { class: 'upload-head' }, el('span', { class: 'upload-name', text: file.name }), cancel),
    bar,
    el('div', { class: 'upload-meta' }, numbers, state));
  uploadsNode.prepend(item);
  updateClearButton();

  const samples = [{ t: performance.now(), loaded: 0 }];
  const finish = (stateName, text, isError) => {
    item.dataset.state = stateName;
    state.textContent = text;
    state.classList.toggle('is-error', Boolean(isError));
    // A bar left full and blue reads as success: a failed one turns red, a cancelled one grey.
    bar.classList.toggle('is-failed', stateName === 'failed');
    bar.classList.toggle('is-gone', stateName === 'cancelled');
    // A keyboard user who pressed Cancel keeps a sensible focus when the button goes away.
    if (document.activeElement === cancel) document.getElementById('file-input').focus();
    cancel.remove();
    updateClearButton();
    announce(`${file.name}: ${text}`);
    filesRefresh();
  };

  const progress = (loaded, total = file.size) => {
    const now = performance.now();
    // A resumed upload restarts from the server's offset: the speed window starts again there.
    if (loaded < samples[samples.length - 1].loaded) samples.splice(0, samples.length);
    samples.push({ t: now, loaded });
    while (samples.length > 2 && now - samples[1].t > SPEED_WINDOW_MS) samples.shift();
    const first = samples[0];
    const seconds = (now - first.t) / 1000;
    const speed = seconds > 0 ? (loaded - first.loaded) / seconds : 0;
    const percent = total > 0 ? Math.floor((loaded / total) * 100) : 100;
    bar.value = percent;
    // Bytes the browser reports sent, in the markup for tests and user styles to read.
    item.dataset.sent = String(loaded);
    numbers.textContent = `${formatBytes(loaded)} of ${formatBytes(total)} · ${formatBytes(speed)}/s`;
    state.textContent = loaded >= total ? 'Sent, waiting for the gateway' : `${percent}%`;
    state.classList.remove('is-error');
  };
  const done = (sha256) => {
    bar.value = 100;
    const detail = sha256 ? ` · sha256 ${String(sha256).slice(0, 12)}…` : '';
    numbers.textContent = `${formatBytes(file.size)}${detail}`;
    finish('done', 'Uploaded 100%', false);
  };
  return { item, state, progress, finish, done };
}

// A small file: one PUT through XMLHttpRequest, because fetch has no upload progress events in
// Chromium without streaming bodies over HTTP/2.
function startPutUpload(file) {
  const xhr = new XMLHttpRequest();
  const { state, progress, finish, done } = uploadRow(file, () => xhr.abort());

  xhr.upload.addEventListener('progress', (event) => progress(event.loaded, event.lengthComputable ? event.total : file.size));
  xhr.addEventListener('load', () => {
    if (xhr.status === 200 || xhr.status === 201) {
      let sha256 = '';
      try {
        const body = JSON.parse(xhr.responseText);
        if (body && body.sha256) sha256 = body.sha256;
      } catch {
        // The upload succeeded; a body we cannot read only loses the checksum shown.
      }
      done(sha256);
      return;
    }
    if (xhr.status === 401) reportUnauthorized();
    finish('failed', describeError(errorFromBody(xhr.status, xhr.responseText)), true);
  });
  xhr.addEventListener('error', () => finish('failed', describeError(new ApiError(0, 'network', '')), true));
  xhr.addEventListener('abort', () => finish('cancelled', 'Cancelled: nothing was kept', false));

  xhr.open('PUT', `/api/v1/files/${encodeURIComponent(file.name)}`);
  const auth = authHeader();
  if (auth) xhr.setRequestHeader('Authorization', auth);
  // The body is raw bytes whatever the file's type, as the API expects.
  xhr.setRequestHeader('Content-Type', 'application/octet-stream');
  state.textContent = '0%';
  xhr.send(file);
}

// A big file: tus PATCHes of a few MiB; a dropped connection resumes from the server's offset.
function startTusUpload(file) {
  let cancelling = null;
  const upload = new TusUpload(file, {
    onProgress: (sent) => progress(sent),
    onRetry: (delayMs, err) => {
      item.dataset.retries = String(Number(item.dataset.retries || 0) + 1);
      state.textContent = `${describeError(err)}; resuming in ${Math.ceil(delayMs / 1000)} s`;
      state.classList.add('is-error');
    },
    onResume: (offset) => {
      item.dataset.resumedAt = String(offset);
      announce(`${file.name}: resuming at ${formatBytes(offset)}`);
    },
  });
  const { item, state, progress, finish, done } = uploadRow(file, () => {
    cancelling = upload.cancel();
  });
  item.dataset.resumable = 'tus';
  state.textContent = '0%';
  upload.start().then(async () => {
    // A PATCH answers 204 with no body: the stored file's sha256 comes from its ETag.
    let sha256 = '';
    try {
      const headers = {};
      const auth = authHeader();
      if (auth) headers.Authorization = auth;
      const head = await fetch(`/api/v1/files/${encodeURIComponent(file.name)}`, { method: 'HEAD', headers, cache: 'no-store' });
      sha256 = (head.headers.get('ETag') || '').replace(/"/g, '');
    } catch {
      // Stored all the same; only the checksum shown is lost.
    }
    done(sha256);
  }, async (err) => {
    if (err instanceof Cancelled) {
      try {
        await cancelling;
        finish('cancelled', 'Cancelled: nothing was kept', false);
      } catch (termErr) {
        finish('failed', `Cancelled, but the server kept the unfinished upload: ${describeError(termErr)}`, true);
      }
      return;
    }
    finish('failed', describeError(err), true);
  });
}

/** Reloads the list of stored files; overlapping calls keep only the newest answer. */
export async function filesRefresh() {
  const seq = ++refreshSeq;
  listStatus.textContent = 'Loading…';
  listStatus.classList.remove('is-error');
  let files;
  try {
    const body = await api('GET', '/api/v1/files');
    files = body && Array.isArray(body.files) ? body.files : [];
  } catch (err) {
    if (seq !== refreshSeq) return;
    listStatus.textContent = describeError(err);
    listStatus.classList.add('is-error');
    return;
  }
  if (seq !== refreshSeq) return;
  files.sort((a, b) => String(a.name).localeCompare(String(b.name)));
  listNode.replaceChildren(...files.map(fileRow));
  const total = files.reduce((sum, f) => sum + (Number(f.size) || 0), 0);
  listStatus.textContent = files.length === 0
    ? 'No files stored yet.'
    : `${files.length} file${files.length === 1 ? '' : 's'}, ${formatBytes(total)} in all.`;
}

function formatDate(mtimeMs) {
  const ms = Number(mtimeMs);
  if (!Number.isFinite(ms) || ms <= 0) return '';
  const date = new Date(ms);
  return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

function isoDate(mtimeMs) {
  const ms = Number(mtimeMs);
  return Number.isFinite(ms) && ms > 0 ? new Date(ms).toISOString() : undefined;
}

function fileRow(file) {
  const name = String(file.name);
  const href = `/api/v1/files/${encodeURIComponent(name)}`;
  const download = el('a', {
    href, download: name, class: 'button secondary', text: 'Download',
    'aria-label': `Download ${name}`, onclick: (event) => downloadWithToken(event, href, name),
  });
  const remove = el('button', {
    type: 'button', class: 'danger', text: 'Delete', 'aria-label': `Delete ${name}`,
  });
  const actions = el('div', { class: 'file-actions' }, download, remove);
  const row = el('li', { class: 'file', 'data-name': name },
    el('div', { class: 'file-main' },
      el('span', { class: 'file-name', text: name }),
      el('span', { class: 'file-meta' },
        el('span', { text: formatBytes(Number(file.size)) }),
        el('time', { datetime: isoDate(file.mtime_ms), text: formatDate(file.mtime_ms) }))),
    actions);
  if (file.sha256) row.title = `sha256 ${file.sha256}`;
  remove.addEventListener('click', () => askDelete(row, actions, name));
  return row;
}

// Delete asks in place: the row's buttons give way to a question with Delete and Keep.
function askDelete(row, actions, name) {
  const keep = el('button', { type: 'button', class: 'secondary', text: 'Keep', 'aria-label': `Keep ${name}` });
  const confirm = el('button', { type: 'button', class: 'danger', text: 'Yes, delete', 'aria-label': `Yes, delete ${name}` });
  const message = el('span', { class: 'confirm-text', text: `Delete ${name}?` });
  const box = el('div', { class: 'confirm', role: 'group', 'aria-label': `Confirm deleting ${name}` },
    message, confirm, keep);
  const restore = () => {
    box.replaceWith(actions);
    actions.querySelector('.danger').focus();
  };
  keep.addEventListener('click', restore);
  box.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') restore();
  });
  confirm.addEventListener('click', async () => {
    confirm.disabled = true;
    keep.disabled = true;
    message.textContent = `Deleting ${name}…`;
    try {
      await api('DELETE', `/api/v1/files/${encodeURIComponent(name)}`);
      announce(`Deleted ${name}`);
      markDeleted(name);
      await filesRefresh();
      document.getElementById('file-input').focus();
    } catch (err) {
      message.textContent = describeError(err);
      message.classList.add('is-error');
      keep.disabled = false;
      keep.textContent = 'Back';
      keep.focus();
    }
  });
  actions.replaceWith(box);
  keep.focus();
}

// A plain link cannot send the Authorization header, so with a token the file comes through
// fetch into memory and is saved from there; without one the browser streams it to disk.
async function downloadWithToken(event, href, name) {
  const auth = authHeader();
  if (!auth) return;
  event.preventDefault();
  try {
    const response = await fetch(href, { headers: { Authorization: auth }, cache: 'no-store' });
    if (!response.ok) {
      if (response.status === 401) reportUnauthorized();
      throw errorFromBody(response.status, await response.text().catch(() => ''));
    }
    const url = URL.createObjectURL(await response.blob());
    const link = el('a', { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    // Revoking at once can cancel the save in some browsers; a minute is plenty to start it.
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    listStatus.textContent = `${name}: ${describeError(err)}`;
    listStatus.classList.add('is-error');
  }
}
