/**
 * The main window: sandboxed, context-isolated renderer with a strict CSP; navigation, new
 * windows and permission requests are refused; size and position are remembered between starts.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { BrowserWindow, screen, session, shell } from 'electron';
import type { Logger } from '../services/jobs';

interface WindowBounds {
  x?: number;
  y?: number;
  width: number;
  height: number;
  maximized: boolean;
}

const DEFAULT_BOUNDS: WindowBounds = { width: 1280, height: 860, maximized: false };

export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'";

function readBounds(file: string): WindowBounds {
  try {
    const saved = JSON.parse(readFileSync(file, 'utf8')) as WindowBounds;
    if (!Number.isFinite(saved.width) || !Number.isFinite(saved.height)) return DEFAULT_BOUNDS;
    // Drop a position that is no longer on any display (an unplugged monitor).
    if (saved.x !== undefined && saved.y !== undefined) {
      const visible = screen.getAllDisplays().some(({ workArea }) => saved.x! >= workArea.x && saved.y! >= workArea.y && saved.x! < workArea.x + workArea.width && saved.y! < workArea.y + workArea.height);
      if (!visible) return { ...saved, x: undefined, y: undefined };
    }
    return saved;
  } catch {
    return DEFAULT_BOUNDS;
  }
}

/** Applies the session-wide rules: CSP header, no permissions. */
export function hardenSession(devServerUrl: string | undefined): void {
  const ses = session.defaultSession;
  ses.setPermissionRequestHandler((_contents, _permission, callback) => callback(false));
  ses.setPermissionCheckHandler(() => false);
  if (!devServerUrl) {
    ses.webRequest.onHeadersReceived((details, callback) => {
      callback({ responseHeaders: { ...details.responseHeaders, 'Content-Security-Policy': [CONTENT_SECURITY_POLICY] } });
    });
  }
}

export function createMainWindow(options: { preload: string; rendererFile: string; devServerUrl?: string; stateFile: string; logger: Logger }): BrowserWindow {
  const bounds = readBounds(options.stateFile);
  const window = new BrowserWindow({
    ...bounds,
    minWidth: 900,
    minHeight: 600,
    show: false,
    title: 'LoRA Studio',
    webPreferences: {
      preload: options.preload,
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      webSecurity: true,
      spellcheck: false,
    },
  });
  if (bounds.maximized) window.maximize();
  window.once('ready-to-show', () => window.show());

  const appUrl = options.devServerUrl ?? `file://${options.rendererFile}`;
  window.webContents.on('will-navigate', (event, url) => {
    if (!url.startsWith(appUrl.split('#')[0])) {
      event.preventDefault();
      options.logger.warn(`Blocked navigation to ${url}`);
    }
  });
  window.webContents.setWindowOpenHandler(({ url }) => {
    // Links to documentation open in the system browser; nothing opens inside the app.
    if (url.startsWith('https://')) void shell.openExternal(url);
    return { action: 'deny' };
  });
  window.webContents.on('will-attach-webview', (event) => event.preventDefault());

  const saveBounds = () => {
    const state: WindowBounds = { ...window.getNormalBounds(), maximized: window.isMaximized() };
    try {
      writeFileSync(options.stateFile, JSON.stringify(state));
    } catch (error) {
      options.logger.warn(`Failed to save the window size to ${options.stateFile}`, error);
    }
  };
  window.on('close', saveBounds);

  if (options.devServerUrl) void window.loadURL(options.devServerUrl);
  else void window.loadFile(options.rendererFile);
  return window;
}

/** True when `url` is the app's own page (the built file or the dev server). */
export function isAppUrl(url: string, rendererFile: string, devServerUrl: string | undefined): boolean {
  if (devServerUrl) return url.startsWith(devServerUrl);
  return url.startsWith('file://') && decodeURIComponent(new URL(url).pathname) === path.resolve(rendererFile);
}

export function rendererExists(rendererFile: string): boolean {
  return existsSync(rendererFile);
}
