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
  // A full-page capture keeps the window's scroll offset, which would shift the sticky sidebar.
  await page.evaluate(() => window.scrollTo(0, 0));
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

export const NARROW_VIEWPORT = { width: 1024, height: 700 };
export const WIDE_VIEWPORT = { width: 1360, height: 900 };

export interface AccessibilityProblem {
  rule: 'duplicate-id' | 'unnamed-control' | 'missing-reference' | 'contrast' | 'horizontal-overflow';
  detail: string;
}

/**
 * Checks the current page for problems a browser can find without an audit library: duplicate
 * ids, form controls and buttons without an accessible name, aria-labelledby/aria-describedby
 * pointing at missing ids, text below the WCAG AA contrast ratio (4.5:1, or 3:1 for large text)
 * against its nearest opaque background, and a page wider than the window.
 */
export async function findAccessibilityProblems(page: Page): Promise<AccessibilityProblem[]> {
  return page.evaluate(() => {
    const problems: { rule: AccessibilityProblem['rule']; detail: string }[] = [];
    const describe = (element: Element) => {
      const id = element.id ? `#${element.id}` : '';
      const test = element.getAttribute('data-test') ? `[data-test=${element.getAttribute('data-test')}]` : '';
      const text = (element.textContent ?? '').trim().replace(/\s+/g, ' ').slice(0, 40);
      return `<${element.tagName.toLowerCase()}${id}${test}> "${text}"`;
    };

    const seen = new Map<string, number>();
    for (const element of document.querySelectorAll('[id]')) seen.set(element.id, (seen.get(element.id) ?? 0) + 1);
    for (const [id, count] of seen) if (count > 1) problems.push({ rule: 'duplicate-id', detail: `id "${id}" is used ${count} times` });

    for (const element of document.querySelectorAll('[aria-labelledby], [aria-describedby]')) {
      for (const attribute of ['aria-labelledby', 'aria-describedby']) {
        for (const id of (element.getAttribute(attribute) ?? '').split(/\s+/).filter(Boolean)) {
          if (!document.getElementById(id)) problems.push({ rule: 'missing-reference', detail: `${describe(element)} ${attribute}="${id}" names no element` });
        }
      }
    }

    const accessibleName = (element: HTMLElement): string => {
      const labelledby = element.getAttribute('aria-labelledby');
      if (labelledby) return labelledby.split(/\s+/).map((id) => document.getElementById(id)?.textContent ?? '').join(' ').trim();
      const label = element.getAttribute('aria-label');
      if (label?.trim()) return label.trim();
      const labels = (element as HTMLInputElement).labels;
      if (labels?.length) return [...labels].map((entry) => entry.textContent ?? '').join(' ').trim();
      if (element.tagName === 'BUTTON') return (element.textContent ?? '').trim();
      return element.getAttribute('title')?.trim() ?? '';
    };
    for (const element of document.querySelectorAll<HTMLElement>('input:not([type=hidden]), select, textarea, button, [role=radio], [role=checkbox]')) {
      if (!accessibleName(element)) problems.push({ rule: 'unnamed-control', detail: describe(element) });
    }

    const parse = (color: string): [number, number, number, number] | null => {
      const match = /rgba?\(([^)]+)\)/.exec(color);
      if (!match) return null;
      const parts = match[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return [parts[0], parts[1], parts[2], parts[3] ?? 1];
    };
    const luminance = ([r, g, b]: number[]) => {
      const channel = (value: number) => {
        const c = value / 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
    };
    /** Blends the backgrounds from the element up to the root, stopping at the first opaque one. */
    const backgroundOf = (element: Element): number[] => {
      const layers: number[][] = [];
      for (let node: Element | null = element; node; node = node.parentElement) {
        const color = parse(getComputedStyle(node).backgroundColor);
        if (color && color[3] > 0) {
          layers.push(color);
          if (color[3] >= 1) break;
        }
      }
      let result = [255, 255, 255];
      for (const [r, g, b, a] of layers.reverse()) result = [r * a + result[0] * (1 - a), g * a + result[1] * (1 - a), b * a + result[2] * (1 - a)];
      return result;
    };
    const hidden = (element: Element) => {
      for (let node: Element | null = element; node; node = node.parentElement) {
        const style = getComputedStyle(node);
        if (style.visibility === 'hidden' || style.display === 'none' || Number(style.opacity) < 1) return true;
        if (node.classList.contains('visually-hidden') || node.matches(':disabled, [aria-disabled=true]')) return true;
      }
      return false;
    };
    let contrastProblems = 0;
    for (const element of document.body.querySelectorAll('*')) {
      const ownText = [...element.childNodes].some((node) => node.nodeType === Node.TEXT_NODE && node.textContent?.trim());
      if (!ownText || element.getClientRects().length === 0 || hidden(element)) continue;
      const style = getComputedStyle(element);
      const foreground = parse(style.color);
      if (!foreground) continue;
      const background = backgroundOf(element);
      const blended = foreground.slice(0, 3).map((value, index) => value * foreground[3] + background[index] * (1 - foreground[3]));
      const [light, dark] = [luminance(blended), luminance(background)].sort((a, b) => b - a);
      const ratio = (light + 0.05) / (dark + 0.05);
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5) && contrastProblems++ < 10) {
        problems.push({ rule: 'contrast', detail: `${describe(element)} has ${ratio.toFixed(2)}:1 (${style.color} on rgb(${background.map(Math.round).join(', ')}))` });
      }
    }

    if (document.documentElement.scrollWidth > window.innerWidth + 1) {
      problems.push({ rule: 'horizontal-overflow', detail: `page is ${document.documentElement.scrollWidth}px wide in a ${window.innerWidth}px window` });
    }
    return problems;
  });
}

/**
 * Saves the wide and the narrow screenshot of the current page in the current theme and returns
 * the accessibility problems found at both widths.
 */
export async function captureScreen(page: Page, name: string): Promise<AccessibilityProblem[]> {
  await screenshot(page, name);
  const problems = await findAccessibilityProblems(page);
  await page.setViewportSize(NARROW_VIEWPORT);
  try {
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    await screenshot(page, `${name}-narrow`);
    problems.push(...(await findAccessibilityProblems(page)).map((problem) => ({ ...problem, detail: `at 1024 px: ${problem.detail}` })));
  } finally {
    await page.setViewportSize(WIDE_VIEWPORT);
  }
  return problems;
}
