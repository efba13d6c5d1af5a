/**
 * IPC channel names between the preload and main. Requests use one channel per API method,
 * `studio:<namespace>.<method>` (see `API_SCHEMAS` in ./api), and all events share one channel
 * carrying `{ event, payload }`.
 */
import type { ApiMethod, ApiNamespace } from './api';
import type { ErrorPayload } from './errors';

export const IPC_PREFIX = 'studio:';

/**
 * Method names per namespace, without the zod schemas, so the sandboxed preload stays small.
 * A unit test checks that this list and `API_SCHEMAS` name the same methods.
 */
export const API_METHOD_NAMES = {
  models: ['inspect', 'recent', 'chooseFolder'],
  datasets: ['import', 'list', 'get', 'preview', 'remove', 'chooseFile'],
  runs: ['estimate', 'start', 'pause', 'resume', 'cancel', 'list', 'get', 'rename', 'setTags', 'remove', 'generate'],
  exports: ['start', 'chooseDestination', 'showInFolder'],
  system: ['info', 'backend'],
} as const satisfies { [N in ApiNamespace]: readonly ApiMethod<N>[] };

/** Main → renderer: every `StudioEvents` event, as `{ event, payload }`. */
export const IPC_EVENT_CHANNEL = 'studio:event';

export function requestChannel(namespace: ApiNamespace | string, method: string): string {
  return `${IPC_PREFIX}${namespace}.${method}`;
}

/** Splits `studio:<namespace>.<method>`; undefined for any other channel. */
export function parseRequestChannel(channel: string): { namespace: string; method: string } | undefined {
  const match = /^studio:([A-Za-z]+)\.([A-Za-z]+)$/.exec(channel);
  return match ? { namespace: match[1], method: match[2] } : undefined;
}

/**
 * The value an IPC handler returns. Electron rewrites thrown errors into a generic message, so
 * handlers return failures as data and the preload rethrows them with code and hint intact.
 */
export type IpcResult<T = unknown> = { ok: true; value: T } | { ok: false; error: ErrorPayload };
