// Resumable uploads over the gateway's tus 1.0 endpoint (/api/v1/uploads/): the file goes up in
// blocks; a dropped connection resumes by itself from the server's offset with back-off, and the
// upload's address is kept in localStorage (by name, size and mtime) so a reloaded page can offer
// to finish it. Cancel terminates the upload on the server.

import { ApiError, authHeader, errorFromBody, reportUnauthorized } from './api.js';

const ENDPOINT = '/api/v1/uploads/';
const MiB = 1024 * 1024;
/** Files at least this big go up with tus; smaller ones with one PUT (nothing much to resume). */
export const TUS_MIN_SIZE = 8 * MiB;
/** One PATCH carries at most this much: what a cut connection can cost when nothing of it is kept. */
const CHUNK_SIZE = 8 * MiB;
// Waits before each new try after a failure, then the upload gives up; a success resets them.
const RETRY_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 15000, 30000];
// Cancel's DELETE meets 423 while the gateway is still noticing the aborted PATCH.
const TERMINATE_TRIES = 10;
const STORE_PREFIX = 'sockgate-tus:';

/** Thrown by start() once cancel() ran. */
export class Cancelled extends Error {
  constructor() {
    super('cancelled');
    this.name = 'Cancelled';
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function storeKey(name, size, lastModified) {
  return STORE_PREFIX + JSON.stringify([name, size, lastModified]);
}

function storeGet(key) {
  try {
    const value = JSON.parse(localStorage.getItem(key) || 'null');
    return value && typeof value.url === 'string' && value.url.startsWith(ENDPOINT) ? value : null;
  } catch {
    return null; // storage disabled or a damaged entry: start afresh
  }
}

function storeSet(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Without storage an upload still resumes after a dropped connection, not after a reload.
  }
}

/** Forgets the stored address of an unfinished upload. */
export function forgetPending(key) {
  try {
    localStorage.removeItem(key);
  } catch {
    // nothing stored then
  }
}

/** The unfinished uploads this browser remembers: [{ key, name, size, lastModified, url, sent }]. */
export function pendingUploads() {
  const out = [];
  try {
    for (let i = 0; i < localStorage.length; i++) {
      const key = localStorage.key(i);
      if (!key || !key.startsWith(STORE_PREFIX)) continue;
      const value = storeGet(key);
      if (value) out.push({ key, ...value });
    }
  } catch {
    // no storage: nothing remembered
  }
  return out;
}

/** Returns the stored entry's key for file when this browser was sending it, else ''. */
export function pendingKeyFor(file) {
  const key = storeKey(file.name, file.size, file.lastModified);
  return storeGet(key) ? key : '';
}

// Upload-Metadata values are base64 of UTF-8 bytes.
function base64Utf8(text) {
  let binary = '';
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

function tusHeaders(extra) {
  const headers = { 'Tus-Resumable': '1.0.0', ...extra };
  const auth = authHeader();
  if (auth) headers.Authorization = auth;
  return headers;
}

// Network failures, offsets that moved, a lock held by a dying request and a backend that is
// down or slow (502, 503, 504) pass with time; any other refusal (a bad name, too large, a full
// disk, 401) would only be refused again.
const RETRY_STATUSES = new Set([0, 409, 423, 502, 503, 504]);
function isRetryable(err) {
  return err instanceof ApiError && RETRY_STATUSES.has(err.status);
}

async function failure(response) {
  if (response.status === 401) reportUnauthorized();
  return errorFromBody(response.status, await response.text().catch(() => ''));
}

/** Terminates the upload at url (tus DELETE); 404 means it is gone already. */
export async function terminate(url) {
  for (let i = 0; i < TERMINATE_TRIES; i++) {
    let response;
    try {
      response = await fetch(url, { method: 'DELETE', headers: tusHeaders() });
    } catch {
      await sleep(RETRY_DELAYS_MS[Math.min(i, 3)]);
      continue;
    }
    if (response.status === 204 || response.status === 404) return;
    if (!RETRY_STATUSES.has(response.status)) throw await failure(response);
    await sleep(RETRY_DELAYS_MS[Math.min(i, 3)]);
  }
  throw new ApiError(423, 'locked', 'the upload could not be terminated: it stayed in use');
}

/**
 * One resumable upload of file. onProgress(sent) reports the bytes the server holds plus those
 * of the PATCH in flight; onRetry(delayMs, err) says a try failed and when the next one starts;
 * onResume(offset) says the upload continues one this browser had started (after a reload).
 */
export class TusUpload {
  constructor(file, { onProgress = () => {}, onRetry = () => {}, onResume = () => {} } = {}) {
    this.file = file;
    this.key = storeKey(file.name, file.size, file.lastModified);
    this.url = '';
    this.offset = 0;
    this.xhr = null;
    this.isCancelled = false;
    this.onProgress = onProgress;
    this.onRetry = onRetry;
    this.onResume = onResume;
  }

  /** Sends the file; resolves when it is stored, rejects with an ApiError or Cancelled. */
  async start() {
    const saved = storeGet(this.key);
    if (saved) {
      this.url = saved.url;
      const offset = await this.serverOffset().catch((err) => {
        if (err instanceof ApiError && err.status === 404) return -1; // expired or finished: start over
        throw err;
      });
      if (offset < 0) {
        forgetPending(this.key);
        this.url = '';
      } else {
        this.offset = offset;
        this.onResume(offset);
      }
    }
    if (!this.url) await this.create();
    this.onProgress(this.offset);
    let attempt = 0;
    while (this.offset < this.file.size) {
      if (this.isCancelled) throw new Cancelled();
      try {
        this.offset = await this.patch();
        storeSet(this.key, this.stored());
        attempt = 0;
      } catch (err) {
        if (this.isCancelled) throw new Cancelled();
        if (!isRetryable(err) || attempt >= RETRY_DELAYS_MS.length) throw err;
        const delay = RETRY_DELAYS_MS[attempt++];
        this.onRetry(delay, err);
        await sleep(delay);
        if (this.isCancelled) throw new Cancelled();
        // Where the server is: the bytes of the cut PATCH that arrived count.
        try {
          this.offset = await this.serverOffset();
          this.onProgress(this.offset);
        } catch (headErr) {
          if (!isRetryable(headErr)) throw headErr;
        }
      }
    }
    forgetPending(this.key);
  }

  /** Stops sending and terminates the upload on the server, forgetting it here. */
  async cancel() {
    this.isCancelled = true;
    if (this.xhr) this.xhr.abort();
    forgetPending(this.key);
    if (this.url) await terminate(this.url);
  }

  stored() {
    return {
      url: this.url, name: this.file.name, size: this.file.size, lastModified: this.file.lastModified,
      sent: this.offset,
    };
  }

  async create() {
    const response = await fetch(ENDPOINT, {
      method: 'POST',
      headers: tusHeaders({
        'Upload-Length': String(this.file.size),
        'Upload-Metadata': `filename ${base64Utf8(this.file.name)}`,
      }),
    });
    const location = response.headers.get('Location');
    if (response.status !== 201 || !location) throw await failure(response);
    this.url = location;
    this.offset = 0;
    storeSet(this.key, this.stored());
  }

  async serverOffset() {
    let response;
    try {
      response = await fetch(this.url, { method: 'HEAD', headers: tusHeaders(), cache: 'no-store' });
    } catch {
      throw new ApiError(0, 'network', '');
    }
    if (response.status !== 200) throw await failure(response);
    return Number(response.headers.get('Upload-Offset'));
  }

  // One PATCH of the next block, through XMLHttpRequest for its upload progress events.
  patch() {
    const start = this.offset;
    const body = this.file.slice(start, Math.min(start + CHUNK_SIZE, this.file.size));
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.upload.addEventListener('progress', (event) => this.onProgress(start + event.loaded));
      xhr.addEventListener('load', () => {
        this.xhr = null;
        const offset = Number(xhr.getResponseHeader('Upload-Offset'));
        if (xhr.status === 204 && Number.isFinite(offset) && offset > start) {
          resolve(offset);
          return;
        }
        if (xhr.status === 401) reportUnauthorized();
        reject(errorFromBody(xhr.status, xhr.responseText));
      });
      xhr.addEventListener('error', () => {
        this.xhr = null;
        reject(new ApiError(0, 'network', ''));
      });
      xhr.addEventListener('abort', () => {
        this.xhr = null;
        reject(new Cancelled());
      });
      xhr.open('PATCH', this.url);
      for (const [name, value] of Object.entries(tusHeaders({
        'Upload-Offset': String(start), 'Content-Type': 'application/offset+octet-stream',
      }))) xhr.setRequestHeader(name, value);
      xhr.send(body);
    });
  }
}
