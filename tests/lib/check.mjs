// A small sequential test runner: named steps, assertions, console watching, a closing line.

import assert from 'node:assert/strict';

export { assert };

// Each step gets this long before it counts as failed; a wedged page must not hang ctest.
const STEP_TIMEOUT_MS = 120000;

const results = [];
let current = 'setup';
const consoleProblems = [];
const expectedNetwork = [];

/** Returns the name of the step running now (for messages recorded by event handlers). */
export function currentStep() {
  return current;
}

/** Runs one named step; a thrown error or a timeout marks it failed and the run goes on. */
export async function step(name, fn) {
  current = name;
  const started = Date.now();
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`step timed out after ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
      }),
    ]);
    results.push({ name, ok: true });
    console.log(`ok   - ${name} (${Date.now() - started} ms)`);
    return true;
  } catch (err) {
    results.push({ name, ok: false, err });
    console.log(`FAIL - ${name}: ${err && err.stack ? err.stack : err}`);
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Declares that, during the step `stepName`, the browser will log "Failed to load resource"
 * with this HTTP status for a URL whose path matches `pathPattern`: the page asked for
 * something the gateway rightly refused (a disallowed command, a missing token), and Chromium
 * logs every such response on its console, which no page can prevent. A `stepName` of '*'
 * allows it in every step.
 */
export function expectNetworkError(stepName, status, pathPattern) {
  expectedNetwork.push({ stepName, status, pathPattern });
}

function isExpected(problem) {
  // "Failed to load resource: ... status of 403", or EventSource's "has a status 401 that is not 200".
  const match = /status (?:of )?(\d{3})/.exec(problem.text);
  if (!match || !problem.url) return false;
  const status = Number(match[1]);
  let pathname;
  try {
    pathname = new URL(problem.url).pathname;
  } catch {
    return false;
  }
  return expectedNetwork.some((e) => (e.stepName === '*' || e.stepName === problem.step)
    && e.status === status && e.pathPattern.test(pathname));
}

/** Records every console error, uncaught exception and CSP violation the page produces. */
export function watchPage(page, label) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error' && msg.type() !== 'assert') return;
    consoleProblems.push({ step: current, page: label, text: msg.text(), url: msg.location().url || '' });
  });
  page.on('pageerror', (err) => {
    consoleProblems.push({ step: current, page: label, text: `uncaught: ${err.message}`, url: '' });
  });
}

/** Returns the console problems nobody declared as expected, as printable lines. */
function unexpectedConsoleProblems() {
  return consoleProblems.filter((p) => !isExpected(p)).map((p) => `[${p.page}, ${p.step}] ${p.text} ${p.url}`);
}

/** Returns how many console problems were declared expected and seen (for the log). */
function expectedConsoleCount() {
  return consoleProblems.filter(isExpected).length;
}

/**
 * Runs the closing step of a page test: every console problem of the run was declared expected
 * (expectNetworkError), apart from those whose printed line matches ignore.
 */
export function stepNoConsoleErrors(ignore = null) {
  return step('no console errors anywhere', async () => {
    const problems = unexpectedConsoleProblems().filter((p) => !ignore || !ignore.test(p));
    console.log(`  (${expectedConsoleCount()} expected console lines from refused requests)`);
    assert.deepEqual(problems, []);
  });
}

/** Returns true when some step has failed so far. */
export function hasFailures() {
  return results.some((r) => !r.ok);
}

/**
 * Runs a test's main(), counts a throw outside any step as a failure, prints the closing line
 * and sets the process exit code (0 only when every step passed).
 */
export async function runMain(main) {
  await main().catch((err) => {
    console.log(`FAIL - the test itself: ${err && err.stack ? err.stack : err}`);
    process.exitCode = 1;
  });
  const code = summary();
  process.exitCode = process.exitCode || code;
}

/** Prints the closing line and returns the process exit code (0 only when all passed). */
export function summary() {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  if (failed) console.log(`failed steps: ${results.filter((r) => !r.ok).map((r) => r.name).join(', ')}`);
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}
