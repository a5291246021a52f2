// Starts headless Chromium the way every browser test here does.

import { chromium } from 'playwright-core';

const CHROMIUM = process.env.SOCKGATE_CHROMIUM || '/usr/bin/chromium';
// The flags the issue names, plus --disable-quic so nothing tries UDP to any host.
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic',
];

/**
 * Starts Chromium with exactly CHROMIUM_FLAGS and a fresh profile in `profileDir`: playwright's
 * own default flags are switched off, leaving only the two it cannot work without (the
 * DevTools pipe it drives the browser through, and the profile folder).
 */
export function launchChromium(profileDir, viewport) {
  return chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    ignoreDefaultArgs: true,
    args: [...CHROMIUM_FLAGS, '--remote-debugging-pipe', `--user-data-dir=${profileDir}`, 'about:blank'],
    viewport,
    acceptDownloads: true,
  });
}
