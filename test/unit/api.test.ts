/**
 * Request validation of the StudioApi, shared by IPC and HTTP: the schemas, the dispatcher, and
 * the web bridge's HTTP layer in front of a real Studio on a temporary app data folder.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { API_SCHEMAS, dispatchRequest, listMethods, trainConfigSchema, validateRequest } from '../../src/shared/api';
import { StudioError } from '../../src/shared/errors';
import { API_METHOD_NAMES, parseRequestChannel, requestChannel } from '../../src/shared/ipc-channels';
import { DEFAULT_TRAIN_CONFIG, type TrainConfig } from '../../src/shared/train-config';
import { silentLogger } from '../../src/services/jobs';
import { Studio } from '../../src/services/studio';
import { startBridge, type RunningBridge } from '../../src/server/index';

function rejection(run: () => unknown): StudioError {
  try {
    run();
  } catch (error) {
    if (error instanceof StudioError) return error;
    throw error;
  }
  throw new Error('expected a StudioError');
}

function config(overrides: Partial<TrainConfig> = {}): TrainConfig {
  return { ...DEFAULT_TRAIN_CONFIG, modelPath: '/models/gpt2', datasetId: 'ds-1', ...overrides };
}

describe('request validation', () => {
  test('unknown method is NOT_FOUND', () => {
    const error = rejection(() => validateRequest('models', 'format', {}));
    expect(error.code).toBe('NOT_FOUND');
    expect(error.message).toContain('models.format');
    expect(error.hint).toContain('models.inspect');
  });

  test('unknown namespace is NOT_FOUND', () => {
    expect(rejection(() => validateRequest('shell', 'exec', {})).code).toBe('NOT_FOUND');
    expect(rejection(() => validateRequest('__proto__', 'toString', {})).code).toBe('NOT_FOUND');
  });

  test('relative path is INVALID_ARGUMENT', () => {
    const error = rejection(() => validateRequest('models', 'inspect', { path: '../etc' }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('path: path must be absolute');
    expect(error.message).toContain('"../etc"');
  });

  test('path with NUL is INVALID_ARGUMENT', () => {
    const error = rejection(() => validateRequest('datasets', 'import', { path: '/data/a\0b.jsonl' }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('NUL');
  });

  test('wrong type is INVALID_ARGUMENT', () => {
    const error = rejection(() => validateRequest('models', 'inspect', { path: 42 }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('expected a path string');
    expect(error.message).toContain('(received 42)');
  });

  test('unexpected field is INVALID_ARGUMENT', () => {
    const error = rejection(() => validateRequest('runs', 'get', { id: 'run-1', force: true }));
    expect(error.code).toBe('INVALID_ARGUMENT');
  });

  test('id with a slash is INVALID_ARGUMENT', () => {
    const error = rejection(() => validateRequest('runs', 'remove', { id: '../other' }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('id may contain only');
  });

  test('methods without a request accept nothing or an empty object', () => {
    expect(validateRequest('runs', 'list', undefined)).toBeUndefined();
    expect(validateRequest('runs', 'list', {})).toBeUndefined();
    expect(rejection(() => validateRequest('runs', 'list', { all: true })).code).toBe('INVALID_ARGUMENT');
  });

  test('paths are trimmed', () => {
    expect(validateRequest('models', 'inspect', { path: '  /models/gpt2 ' })).toEqual({ path: '/models/gpt2' });
  });

  test('train config defaults are valid', () => {
    expect(trainConfigSchema.safeParse(config()).success).toBe(true);
  });

  test('train config names each invalid field', () => {
    const result = trainConfigSchema.safeParse(
      config({ lora: { ...DEFAULT_TRAIN_CONFIG.lora, r: 0, targetModules: [] }, learningRate: -1, batchSize: 1.5 }),
    );
    expect(result.success).toBe(false);
    const paths = result.error!.issues.map((issue) => issue.path.join('.'));
    expect(paths).toContain('lora.r');
    expect(paths).toContain('lora.targetModules');
    expect(paths).toContain('learningRate');
    expect(paths).toContain('batchSize');
  });

  test('train config needs epochs or max steps', () => {
    const result = trainConfigSchema.safeParse(config({ epochs: 0, maxSteps: 0 }));
    expect(result.success).toBe(false);
    expect(result.error!.issues[0].path).toEqual(['epochs']);
  });

  test('train config needs a dataset', () => {
    const result = trainConfigSchema.safeParse({ ...config(), datasetId: undefined });
    expect(result.error!.issues.map((issue) => issue.message)).toContain('Choose a dataset');
  });

  test('preload method list matches the schemas', () => {
    for (const [namespace, methods] of Object.entries(API_SCHEMAS)) {
      expect([...API_METHOD_NAMES[namespace as keyof typeof API_METHOD_NAMES]].sort()).toEqual(Object.keys(methods).sort());
    }
    expect(Object.keys(API_METHOD_NAMES).sort()).toEqual(Object.keys(API_SCHEMAS).sort());
  });

  test('ipc channel names round trip', () => {
    for (const name of listMethods()) {
      const [namespace, method] = name.split('.');
      expect(parseRequestChannel(requestChannel(namespace, method))).toEqual({ namespace, method });
    }
    expect(parseRequestChannel('other:models.inspect')).toBeUndefined();
  });
});

describe('studio behind the web bridge', () => {
  let dir: string;
  let studio: Studio;
  let bridge: RunningBridge;
  let datasetFile: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'studio-api-'));
    studio = Studio.open({ appDataDir: path.join(dir, 'data'), host: 'web', appVersion: '0.0.0', logger: silentLogger, resourcesDir: path.join(dir, 'resources') });
    bridge = await startBridge({ api: studio, rendererDir: path.join(dir, 'renderer'), logger: silentLogger });
    datasetFile = path.join(dir, 'train.jsonl');
    writeFileSync(datasetFile, ['{"text": "one"}', 'not json', '{"text": "two"}', '{"text": "three"}'].join('\n'));
  });

  afterAll(async () => {
    await bridge.close();
    await studio.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function post(route: string, body: unknown, headers: Record<string, string> = {}) {
    const response = await fetch(`${bridge.url}${route}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-studio-token': bridge.token, ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as { value?: unknown; error?: { code: string; message: string; hint?: string } } };
  }

  test('bridge binds loopback only', () => {
    expect(bridge.host).toBe('127.0.0.1');
    expect(bridge.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(bridge.token).toMatch(/^[0-9a-f]{48}$/);
  });

  test('bad path over HTTP is 400', async () => {
    const { status, body } = await post('/api/models/inspect', { path: 'models/gpt2' });
    expect(status).toBe(400);
    expect(body.error?.code).toBe('INVALID_ARGUMENT');
    expect(body.error?.message).toContain('path must be absolute');
  });

  test('bad type over HTTP is 400', async () => {
    const { status, body } = await post('/api/runs/rename', { id: 'run-1', name: 7 });
    expect(status).toBe(400);
    expect(body.error?.code).toBe('INVALID_ARGUMENT');
    expect(body.error?.message).toContain('name');
  });

  test('unknown method over HTTP is 404', async () => {
    const { status, body } = await post('/api/runs/explode', {});
    expect(status).toBe(404);
    expect(body.error?.code).toBe('NOT_FOUND');
  });

  test('missing token is 401', async () => {
    const response = await fetch(`${bridge.url}/api/system/info`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(response.status).toBe(401);
    expect(((await response.json()) as { error?: { code?: string } }).error?.code).toBe('UNAUTHORIZED');
    const wrong = await post('/api/system/info', {}, { 'x-studio-token': 'f'.repeat(48) });
    expect(wrong.status).toBe(401);
  });

  test('foreign host header is 421', async () => {
    // fetch() does not let a caller set Host, so this request goes through node:http.
    const status = await new Promise<number>((resolve, reject) => {
      const request = http.request(
        `${bridge.url}/api/system/info`,
        { method: 'POST', headers: { host: 'attacker.example', 'content-type': 'application/json', 'x-studio-token': bridge.token } },
        (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        },
      );
      request.on('error', reject);
      request.end('{}');
    });
    expect(status).toBe(421);
  });

  test('non-JSON content type is 415', async () => {
    const response = await fetch(`${bridge.url}/api/system/info`, { method: 'POST', headers: { 'content-type': 'text/plain', 'x-studio-token': bridge.token }, body: '{}' });
    expect(response.status).toBe(415);
  });

  test('malformed JSON body is 400', async () => {
    const { status, body } = await post('/api/runs/get', '{"id": ');
    expect(status).toBe(400);
    expect(body.error?.message).toContain('not valid JSON');
  });

  test('missing run is 404 with its id', async () => {
    const { status, body } = await post('/api/runs/get', { id: 'run-missing' });
    expect(status).toBe(404);
    expect(body.error?.code).toBe('NOT_FOUND');
    expect(body.error?.message).toContain('run-missing');
  });

  test('dataset import over HTTP reports skipped lines', async () => {
    const { status, body } = await post('/api/datasets/import', { path: datasetFile });
    expect(status).toBe(200);
    const detail = body.value as { rows: number; report: { rowsSkipped: number; skipped: { line?: number; reason: string }[] } };
    expect(detail.rows).toBe(3);
    expect(detail.report.rowsSkipped).toBe(1);
    expect(detail.report.skipped[0].line).toBe(2);
    expect(detail.report.skipped[0].reason).toBe('invalid_json');
  });

  test('events stream delivers dataset progress', async () => {
    const controller = new AbortController();
    const response = await fetch(`${bridge.url}/api/events?token=${bridge.token}`, { signal: controller.signal });
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    const reader = response.body!.getReader();
    await reader.read(); // ": connected"

    await post('/api/datasets/import', { path: datasetFile, name: 'again' });
    let text = '';
    while (!text.includes('event: dataset-progress')) {
      const chunk = await reader.read();
      text += new TextDecoder().decode(chunk.value);
    }
    controller.abort();
    const data = /event: dataset-progress\ndata: (.*)\n/.exec(text)![1];
    expect(JSON.parse(data).path).toBe(datasetFile);
  });

  test('dispatch calls the facade with parsed values', async () => {
    const list = (await dispatchRequest(studio, 'datasets', 'list', {})) as { name: string }[];
    expect(list.map((entry) => entry.name).sort()).toEqual(['again', 'train']);
  });
});
