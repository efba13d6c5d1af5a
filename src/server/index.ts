/**
 * The web bridge: serves the built renderer and the StudioApi over HTTP on loopback, so the UI
 * runs in any browser (and in the end-to-end tests) and a remote GPU box can be driven through an
 * SSH tunnel.
 *
 * - `POST /api/<namespace>/<method>` with a JSON body → `{ value }` or `{ error: { code, message, hint } }`.
 * - `GET /api/events?token=…` → server-sent events, one per StudioEvents event.
 * - Everything else: files of the built renderer.
 *
 * Every request needs the per-start token: the `x-studio-token` header, a `token` query
 * parameter, or the cookie set when the page was opened with `?token=`. The Host header must
 * name the bound address, which blocks DNS-rebinding pages from reaching the API.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { dispatchRequest, STUDIO_EVENT_NAMES, type StudioApi, type StudioEventName, type StudioEvents, type Unsubscribe } from '../shared/api';
import { StudioError, toErrorPayload, type ErrorCode, type ErrorPayload } from '../shared/errors';
import type { Logger } from '../services/jobs';

export const TOKEN_HEADER = 'x-studio-token';
const TOKEN_COOKIE = 'studio_token';
const MAX_BODY_BYTES = 1024 * 1024;
/** Deepest array or object nesting a request body may have; requests nest a few levels at most. */
const MAX_BODY_DEPTH = 64;
const HEARTBEAT_MS = 15_000;

export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; " +
  "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** The API plus the event feed the bridge forwards. */
export interface BridgeApi extends StudioApi {
  on<E extends StudioEventName>(event: E, listener: (payload: StudioEvents[E]) => void): Unsubscribe;
}

export interface BridgeOptions {
  api: BridgeApi;
  /** Built renderer (`out/renderer`). */
  rendererDir: string;
  logger: Logger;
  /** Default 127.0.0.1. Another interface must be asked for explicitly. */
  host?: string;
  /** Default 0: a free port chosen by the system. */
  port?: number;
  /** Default: 24 random bytes, hex. */
  token?: string;
}

export interface RunningBridge {
  url: string;
  /** The URL with `?token=`, to open in a browser. */
  openUrl: string;
  host: string;
  port: number;
  token: string;
  close(): Promise<void>;
}

const STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = {
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  RUN_STATE: 409,
  DATASET_PARSE: 422,
  DATASET_EMPTY: 422,
  MODEL_UNSUPPORTED: 422,
  MODEL_FILES_MISSING: 422,
  MODEL_FORMAT: 422,
  TOKENIZER_MISSING: 422,
  EXPORT_FAILED: 422,
};

const MIME_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
  '.wasm': 'application/wasm',
};

export async function startBridge(options: BridgeOptions): Promise<RunningBridge> {
  const host = options.host ?? '127.0.0.1';
  const token = options.token ?? randomBytes(24).toString('hex');
  const rendererDir = path.resolve(options.rendererDir);
  const streams = new Set<ServerResponse>();
  let allowedHosts = new Set<string>();

  const server: Server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      options.logger.error(`Web bridge: unhandled error for ${request.method} ${request.url}`, error);
      if (!response.headersSent) sendError(response, toErrorPayload(error));
      else response.end();
    });
  });

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    setCommonHeaders(response);
    const url = new URL(request.url ?? '/', 'http://bridge.invalid');

    if (!allowedHosts.has((request.headers.host ?? '').toLowerCase())) {
      sendError(response, { code: 'INVALID_ARGUMENT', message: `Host "${request.headers.host ?? ''}" is not served here.`, hint: `Open ${baseUrl()} instead.` }, 421);
      return;
    }
    if (!authorized(request, url)) {
      sendError(response, { code: 'UNAUTHORIZED', message: 'Missing or wrong access token.', hint: 'Open the URL with ?token= that `npm run serve` printed.' }, 401);
      return;
    }

    if (url.pathname === '/api/events') {
      if (request.method !== 'GET') return sendError(response, methodNotAllowed(request.method), 405);
      openEventStream(request, response);
      return;
    }
    if (url.pathname.startsWith('/api/')) {
      if (request.method !== 'POST') return sendError(response, methodNotAllowed(request.method), 405);
      await handleApiCall(url.pathname, request, response);
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') return sendError(response, methodNotAllowed(request.method), 405);
    serveStatic(url, response);
  }

  function authorized(request: IncomingMessage, url: URL): boolean {
    const candidates = [request.headers[TOKEN_HEADER], url.searchParams.get('token'), readCookie(request, TOKEN_COOKIE)];
    return candidates.some((value) => typeof value === 'string' && sameToken(value, token));
  }

  async function handleApiCall(pathname: string, request: IncomingMessage, response: ServerResponse): Promise<void> {
    const match = /^\/api\/([A-Za-z]+)\/([A-Za-z]+)$/.exec(pathname);
    if (!match) {
      sendError(response, { code: 'NOT_FOUND', message: `No API route ${pathname}.`, hint: 'Call POST /api/<namespace>/<method>.' }, 404);
      return;
    }
    const [, namespace, method] = match;
    const contentType = request.headers['content-type'] ?? '';
    if (!contentType.startsWith('application/json')) {
      sendError(response, { code: 'INVALID_ARGUMENT', message: `Expected Content-Type application/json, received "${contentType}".` }, 415);
      return;
    }
    try {
      const body = await readJsonBody(request);
      const value = await dispatchRequest(options.api, namespace, method, body);
      sendJson(response, 200, { value: value ?? null });
    } catch (error) {
      const payload = toErrorPayload(error);
      if (payload.code === 'INTERNAL') options.logger.error(`Web bridge: ${namespace}.${method} failed: ${payload.message}`, error);
      sendError(response, payload);
    }
  }

  function openEventStream(request: IncomingMessage, response: ServerResponse): void {
    response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    response.write(': connected\n\n');
    streams.add(response);
    const unsubscribes = STUDIO_EVENT_NAMES.map((name) =>
      options.api.on(name, (payload) => {
        response.write(`event: ${name}\ndata: ${JSON.stringify(payload)}\n\n`);
      }),
    );
    const heartbeat = setInterval(() => response.write(': heartbeat\n\n'), HEARTBEAT_MS);
    heartbeat.unref();
    request.on('close', () => {
      clearInterval(heartbeat);
      unsubscribes.forEach((unsubscribe) => unsubscribe());
      streams.delete(response);
    });
  }

  function serveStatic(url: URL, response: ServerResponse): void {
    const queryToken = url.searchParams.get('token');
    if (queryToken && sameToken(queryToken, token)) {
      response.setHeader('set-cookie', `${TOKEN_COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/`);
    }
    let relative: string;
    try {
      relative = decodeURIComponent(url.pathname === '/' ? '/index.html' : url.pathname);
    } catch {
      sendError(response, { code: 'INVALID_ARGUMENT', message: `The path ${url.pathname} has malformed percent-encoding.`, hint: 'Encode each byte as % followed by two hex digits.' }, 400);
      return;
    }
    const file = path.resolve(rendererDir, `.${relative}`);
    if (!file.startsWith(rendererDir + path.sep) || !existsSync(file) || !statSync(file).isFile()) {
      if (!existsSync(path.join(rendererDir, 'index.html'))) {
        sendError(response, { code: 'NOT_FOUND', message: `The renderer is not built (${rendererDir} has no index.html).`, hint: 'Run `npm run build` first.' }, 404);
        return;
      }
      sendError(response, { code: 'NOT_FOUND', message: `No file ${url.pathname}.` }, 404);
      return;
    }
    response.writeHead(200, {
      'content-type': MIME_TYPES[path.extname(file)] ?? 'application/octet-stream',
      'cache-control': relative === '/index.html' ? 'no-store' : 'max-age=3600',
    });
    createReadStream(file).pipe(response);
  }

  function baseUrl(): string {
    const address = server.address() as AddressInfo;
    const shownHost = host.includes(':') ? `[${host}]` : host;
    return `http://${shownHost}:${address.port}`;
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });

  const port = (server.address() as AddressInfo).port;
  allowedHosts = new Set([`${host}:${port}`, `[${host}]:${port}`, ...(isLoopback(host) ? [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`] : [])]);
  const url = baseUrl();
  options.logger.info(`Web bridge listening on ${url}`);

  return {
    url,
    openUrl: `${url}/?token=${token}`,
    host,
    port,
    token,
    close: () =>
      new Promise<void>((resolve) => {
        for (const stream of streams) stream.end();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function isLoopback(host: string): boolean {
  return host === '127.0.0.1' || host === '::1' || host === 'localhost';
}

function sameToken(candidate: string, token: string): boolean {
  const left = Buffer.from(candidate);
  const right = Buffer.from(token);
  return left.length === right.length && timingSafeEqual(left, right);
}

function readCookie(request: IncomingMessage, name: string): string | undefined {
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const [key, ...value] = part.trim().split('=');
    if (key === name) return value.join('=');
  }
  return undefined;
}

async function readJsonBody(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) {
      throw new StudioError('INVALID_ARGUMENT', `The request body is larger than ${MAX_BODY_BYTES} bytes.`);
    }
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text.trim()) return undefined;
  let body: unknown;
  try {
    body = JSON.parse(text) as unknown;
  } catch (error) {
    throw new StudioError('INVALID_ARGUMENT', `The request body is not valid JSON: ${(error as Error).message}.`, 'Send a JSON object.');
  }
  const depth = nestingDepth(body, MAX_BODY_DEPTH);
  if (depth > MAX_BODY_DEPTH) {
    throw new StudioError('INVALID_ARGUMENT', `The request body nests arrays or objects more than ${MAX_BODY_DEPTH} levels deep.`, 'Send a flatter JSON object.');
  }
  return body;
}

/**
 * Returns how deeply arrays and objects nest in a parsed JSON value, counting at most `limit + 1`
 * levels. It walks with an explicit stack because schema checks and error messages recurse
 * into the value and would overflow the call stack on a body nested thousands of levels deep.
 */
function nestingDepth(value: unknown, limit: number): number {
  let deepest = 0;
  const pending: [unknown, number][] = [[value, 0]];
  while (pending.length > 0) {
    const [node, depth] = pending.pop()!;
    if (node === null || typeof node !== 'object') continue;
    const level = depth + 1;
    deepest = Math.max(deepest, level);
    if (level > limit) return level;
    for (const child of Object.values(node)) pending.push([child, level]);
  }
  return deepest;
}

function methodNotAllowed(method: string | undefined): ErrorPayload {
  return { code: 'INVALID_ARGUMENT', message: `HTTP method ${method ?? '(none)'} is not allowed here.`, hint: 'Use POST for /api/<namespace>/<method> and GET for files and /api/events.' };
}

function setCommonHeaders(response: ServerResponse): void {
  response.setHeader('content-security-policy', CONTENT_SECURITY_POLICY);
  response.setHeader('x-content-type-options', 'nosniff');
  response.setHeader('referrer-policy', 'no-referrer');
  response.setHeader('x-frame-options', 'DENY');
  response.setHeader('cross-origin-opener-policy', 'same-origin');
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  response.end(JSON.stringify(body));
}

function sendError(response: ServerResponse, payload: ErrorPayload, status?: number): void {
  sendJson(response, status ?? STATUS_BY_CODE[payload.code] ?? 500, { error: payload });
}
