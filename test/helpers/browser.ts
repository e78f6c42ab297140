/**
 * A headless Debian chromium driven by playwright-core, for the dashboard's
 * browser tests (test/dashboard-browser.test.ts, test-netns/dashboard.test.ts).
 * A fresh profile each time, and nothing reached but what the test points it
 * at. Screenshots go to test-results/ (gitignored; CI keeps it as an artifact).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
export const RESULTS = path.resolve('test-results');

/** Why the browser tests cannot run here, or false. */
export const browserMissing: string | false = fs.existsSync(CHROMIUM)
  ? false
  : `chromium not installed at ${CHROMIUM}: apt-get install chromium (.ci/run installs it in CI)`;

export interface Browser {
  context: BrowserContext;
  close: () => Promise<void>;
}

/**
 * Starts chromium; with `netns`, inside that network namespace (through a
 * two-line wrapper around `ip netns exec`: playwright talks to chromium over
 * inherited pipes, which the exec keeps), so the page sees the lab's network.
 */
export async function launchBrowser(opts: { netns?: string } = {}): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-chromium-'));
  const profile = path.join(dir, 'profile');
  let executablePath = CHROMIUM;
  if (opts.netns) {
    executablePath = path.join(dir, 'chromium-in-netns');
    fs.writeFileSync(executablePath, `#!/bin/sh\nexec ip netns exec '${opts.netns}' ${CHROMIUM} "$@"\n`, {
      mode: 0o755,
    });
  }
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    return {
      context,
      close: async () => {
        await context.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/** Every request of `page` to anywhere but `base`: the dashboard must work offline, nothing from a CDN. */
export function recordExternal(page: Page, base: string): string[] {
  const external: string[] = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(base)) external.push(r.url());
  });
  return external;
}

export async function screenshot(page: Page, name: string): Promise<string> {
  fs.mkdirSync(RESULTS, { recursive: true });
  const file = path.join(RESULTS, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
