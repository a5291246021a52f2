// Talks to the gateway: one fetch wrapper, the session's access token, and API errors in words.

const TOKEN_KEY = 'sockgate-token';
// The token when sessionStorage is unavailable; lost on reload, which is the safe side.
let memoryToken = '';

// Called with no arguments whenever the gateway answers 401, so the page can ask for a token.
let onUnauthorized = () => {};

/** An error answered by the gateway (status > 0) or a failure to reach it (status 0). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** Returns the token kept for this browser session, or '' when there is none. */
export function tokenGet() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    // Storage can be disabled by the browser's privacy settings; the page then asks every load.
    return '';
  }
}

/** Keeps the token for this browser session; an empty token forgets it. */
export function tokenSet(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Best effort: without storage the token lives only until the page is reloaded.
  }
  memoryToken = token;
}

/** Returns the Authorization header value for the current token, or '' when none is set. */
export function authHeader() {
  const token = tokenGet() || memoryToken;
  return token ? `Bearer ${token}` : '';
}

/** Registers the function called whenever a request is refused with 401. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** Tells the page a request came back 401 (for callers that use XMLHttpRequest directly). */
export function reportUnauthorized() {
  onUnauthorized();
}

/** Builds an ApiError from a status and a response body text in the gateway's error shape. */
export function errorFromBody(status, text) {
  let code = '';
  let message = '';
  try {
    const body = JSON.parse(text);
    if (body && body.error) {
      code = String(body.error.code || '');
      message = String(body.error.message || '');
    }
  } catch {
    // Not JSON (a proxy's HTML page, say): the status alone still tells what happened.
  }
  return new ApiError(status, code, message);
}

/**
 * Sends one API request and resolves with the parsed JSON body (or null for an empty one);
 * rejects with an ApiError for any status outside 2xx or a network failure.
 */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const auth = authHeader();
  if (auth) headers.Authorization = auth;
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network', '');
  }
  const text = await response.text().catch(() => '');
  if (!response.ok) {
    if (response.status === 401) onUnauthorized();
    throw errorFromBody(response.status, text);
  }
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(response.status, 'bad_json', 'the gateway answered with something that is not JSON');
  }
}

// What each HTTP status means to a person using the page.
const STATUS_WORDS = {
  400: 'The gateway did not accept the request',
  401: 'The gateway needs a valid access token',
  403: 'Not allowed',
  404: 'Not found',
  405: 'The gateway does not support this action',
  409: 'Conflict with the current state (a file with that name may be in use)',
  411: 'The request needs a length',
  413: 'Too large: over the gateway\'s size limit',
  415: 'The gateway does not accept this kind of content',
  429: 'Too many requests: try again shortly',
  500: 'The gateway failed inside',
  502: 'A backend answered something the gateway could not understand',
  503: 'The backend is unavailable right now',
  504: 'The backend took too long to answer',
  507: 'No space left to store the file',
};

// Wire error codes that say more than their HTTP status does.
const CODE_WORDS = {
  command_not_allowed: 'This command is not on the gateway\'s allow list',
  invalid_name: 'That file name is not allowed',
  checksum_mismatch: 'The file arrived damaged (checksum mismatch)',
  no_space: 'No space left to store the file',
  too_large: 'Too large: over the gateway\'s size limit',
  timeout: 'The backend took too long to answer',
  unauthorized: 'The gateway needs a valid access token',
  busy: 'The backend is busy: try again shortly',
};

/** Says in words what went wrong with a request, including the gateway's own message. */
export function describeError(err) {
  if (!(err instanceof ApiError)) return `Something went wrong: ${err && err.message ? err.message : err}`;
  if (err.status === 0) return 'Cannot reach the gateway (network error or the connection was closed)';
  // The gateway's own message says what was refused and why; the generic words only stand in
  // when it sent none, so nothing is said twice ("not allowed: command not allowed").
  // A 401 speaks of the page's token form, not of HTTP headers a page user never sees.
  if (err.message && err.code !== 'unauthorized') return `${err.message.charAt(0).toUpperCase()}${err.message.slice(1)} (HTTP ${err.status})`;
  const words = CODE_WORDS[err.code] || STATUS_WORDS[err.status] || `The gateway answered with status ${err.status}`;
  return `${words} (HTTP ${err.status})`;
}

/** Formats a byte count for people: 0 B, 512 B, 1.5 KiB, 20.0 MiB, 1.00 GiB. */
export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 0) return '?';
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/** Creates an element with properties and children; strings become text nodes, never HTML. */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== 'string') node[key] = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Sets an output's text and marks it as an error or a plain result for styling. */
export function showResult(node, text, isError) {
  node.textContent = text;
  node.classList.toggle('is-error', Boolean(isError));
}
