/**
 * StudioApi over the web bridge: `POST /api/<namespace>/<method>` with a JSON body, and one
 * EventSource on `/api/events` for pushed events. The token comes from the page URL.
 */
import {
  API_SCHEMAS,
  STUDIO_EVENT_NAMES,
  type StudioClient,
  type StudioEventName,
  type StudioEvents,
} from '../../../shared/api';
import { StudioError, isErrorPayload } from '../../../shared/errors';

export const TOKEN_HEADER = 'x-studio-token';

export interface HttpClientOptions {
  /** Origin and path prefix of the bridge, without a trailing slash; '' for the page's own origin. */
  baseUrl: string;
  token: string;
  fetch?: typeof fetch;
  EventSource?: typeof EventSource;
}

type Listener = (payload: unknown) => void;

export function createHttpClient(options: HttpClientOptions): StudioClient {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const listeners = new Map<StudioEventName, Set<Listener>>();
  let source: EventSource | undefined;

  async function call(namespace: string, method: string, request: unknown): Promise<unknown> {
    let response: Response;
    try {
      response = await doFetch(`${options.baseUrl}/api/${namespace}/${method}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', [TOKEN_HEADER]: options.token },
        body: JSON.stringify(request ?? {}),
      });
    } catch (error) {
      throw new StudioError(
        'INTERNAL',
        `Could not reach the LoRA Studio server (${error instanceof Error ? error.message : String(error)}).`,
        'Check that `npm run serve` is still running, then reload the page.',
      );
    }
    const text = await response.text();
    const body: unknown = text ? JSON.parse(text) : undefined;
    if (!response.ok) {
      const payload = (body as { error?: unknown } | undefined)?.error;
      if (isErrorPayload(payload)) throw new StudioError(payload.code, payload.message, payload.hint);
      throw new StudioError('INTERNAL', `The server answered HTTP ${response.status} to ${namespace}.${method}.`);
    }
    return (body as { value?: unknown } | undefined)?.value ?? null;
  }

  function ensureEventSource(): void {
    if (source) return;
    const Source = options.EventSource ?? globalThis.EventSource;
    source = new Source(`${options.baseUrl}/api/events?token=${encodeURIComponent(options.token)}`);
    for (const name of STUDIO_EVENT_NAMES) {
      source.addEventListener(name, (event) => {
        const payload: unknown = JSON.parse((event as MessageEvent<string>).data);
        for (const listener of listeners.get(name) ?? []) listener(payload);
      });
    }
  }

  const client: Record<string, unknown> = {
    on<E extends StudioEventName>(event: E, listener: (payload: StudioEvents[E]) => void) {
      ensureEventSource();
      const set = listeners.get(event) ?? new Set<Listener>();
      listeners.set(event, set);
      set.add(listener as Listener);
      return () => set.delete(listener as Listener);
    },
  };
  for (const [namespace, methods] of Object.entries(API_SCHEMAS)) {
    const entry: Record<string, (request?: unknown) => Promise<unknown>> = {};
    for (const method of Object.keys(methods)) {
      entry[method] = (request?: unknown) => call(namespace, method, request);
    }
    client[namespace] = entry;
  }
  return client as unknown as StudioClient;
}
