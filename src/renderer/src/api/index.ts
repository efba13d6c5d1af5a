/**
 * The renderer's one way to reach the services: `window.studio` in the desktop app (set by the
 * preload), otherwise the web bridge client with the token from the page URL.
 */
import type { StudioClient } from '../../../shared/api';
import { createHttpClient } from './http-client';

let client: StudioClient | undefined;

export function setStudioClient(value: StudioClient | undefined): void {
  client = value;
}

export function studio(): StudioClient {
  if (!client) client = pickTransport();
  return client;
}

function pickTransport(): StudioClient {
  if (typeof window !== 'undefined' && window.studio) return window.studio;
  const token = readToken();
  return createHttpClient({ baseUrl: '', token });
}

/** Reads `?token=` from the page URL once and keeps it for hash navigation and reloads. */
function readToken(): string {
  const fromUrl = new URLSearchParams(window.location.search).get('token');
  if (fromUrl) {
    window.sessionStorage.setItem('studio-token', fromUrl);
    return fromUrl;
  }
  return window.sessionStorage.getItem('studio-token') ?? '';
}

/** True in the desktop app, where native dialogs and "show in folder" exist. */
export function isDesktop(): boolean {
  return typeof window !== 'undefined' && Boolean(window.studio);
}
