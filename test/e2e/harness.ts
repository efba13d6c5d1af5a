/**
 * End-to-end harness: builds what is missing, starts the web bridge on a temporary app data
 * folder, and drives Debian's Chromium through playwright-core.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, selectors, type BrowserContext, type Page } from 'playwright-core';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const resultsDir = path.join(repoRoot, 'test-results');
export const CHROMIUM = '/usr/bin/chromium';

export const DEMO_MODEL = path.join(repoRoot, 'resources', 'demo-model', 'config.json');
export const WORKER_SOURCE = path.join(repoRoot, 'src', 'engine', 'worker.ts');
export const hasDemoModel = existsSync(DEMO_MODEL);
export const hasWorker = existsSync(WORKER_SOURCE);
export const hasChromium = existsSync(CHROMIUM);

function newestMtime(folder: string): number {
  let newest = 0;
  for (const entry of readdirSync(folder, { withFileTypes: true })) {
    const full = path.join(folder, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(full) : statSync(full).mtimeMs);
  }
  return newest;
}

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { cwd: repoRoot, encoding: 'utf8', timeout: 600_000 });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.status}):\n${result.stdout}\n${result.stderr}`);
}

/**
 * Builds the renderer when `out/renderer` is missing or older than its sources, and always
 * rebundles the Node entry points (server and worker), which takes seconds.
 */
export function ensureBuilt(): void {
  const index = path.join(repoRoot, 'out', 'renderer', 'index.html');
  const sources = Math.max(newestMtime(path.join(repoRoot, 'src', 'renderer')), newestMtime(path.join(repoRoot, 'src', 'shared')));
  if (!existsSync(index) || statSync(index).mtimeMs < sources) {
    run(process.execPath, [path.join(repoRoot, 'node_modules', 'electron-vite', 'bin', 'electron-vite.js'), 'build']);
  }
  run(process.execPath, [path.join(repoRoot, 'scripts', 'build-node.mjs')]);
}

export interface Bridge {
  /** `http://127.0.0.1:PORT` */
  base: string;
  token: string;
  /** URL to open, with the token. */
  openUrl: string;
  appDataDir: string;
  output: () => string;
  stop(): Promise<void>;
}

/** Starts `out/node/server.mjs` on a free port with its own app data folder. */
export async function startBridge(appDataDir: string): Promise<Bridge> {
  const child: ChildProcess = spawn(process.execPath, [path.join(repoRoot, 'out', 'node', 'server.mjs'), '--data-dir', appDataDir, '--port', '0'], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LORA_STUDIO_DATA_DIR: appDataDir },
  });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (text: string) => (output += text));
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (output += text));

  const openUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`The web bridge printed no URL within 60 s:\n${output}`)), 60_000);
    const check = () => {
      const match = /LoRA Studio web UI: (http:\/\/\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`The web bridge exited with code ${code}:\n${output}`));
    });
  });
  const url = new URL(openUrl);
  return {
    base: url.origin,
    token: url.searchParams.get('token') ?? '',
    openUrl,
    appDataDir,
    output: () => output,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** Launches Chromium with a fresh profile folder. */
export async function launchBrowser(): Promise<{ context: BrowserContext; page: Page; close(): Promise<void> }> {
  selectors.setTestIdAttribute('data-test');
  const profile = mkdtempSync(path.join(os.tmpdir(), 'studio-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Saves a full-page screenshot as `test-results/<name>-<theme>.png`. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(resultsDir, { recursive: true });
  const theme = await page.evaluate(() => document.documentElement.dataset.theme ?? 'light');
  const file = path.join(resultsDir, `${name}-${theme}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

export async function setTheme(page: Page, theme: 'light' | 'dark'): Promise<void> {
  const current = await page.evaluate(() => document.documentElement.dataset.theme);
  if (current !== theme) await page.getByTestId('theme-toggle').click();
}

/** Calls the bridge's API directly, for checks that do not go through the UI. */
export async function callApi<T>(bridge: Bridge, namespace: string, method: string, body: unknown = {}): Promise<{ status: number; body: { value?: T; error?: { code: string; message: string; hint?: string } } }> {
  const response = await fetch(`${bridge.base}/api/${namespace}/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-studio-token': bridge.token },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as { value?: T; error?: { code: string; message: string; hint?: string } } };
}

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}
