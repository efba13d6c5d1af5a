/**
 * The web bridge under hostile and careless requests, in front of a real Studio whose runs use
 * the protocol-faithful fake worker. After each request the server must still respond and the
 * earlier runs must be intact.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBridge, TOKEN_HEADER, type RunningBridge } from '../../src/server/index';
import { silentLogger } from '../../src/services/jobs';
import { Studio } from '../../src/services/studio';
import { createChildProcessTransport } from '../../src/services/transport/child-process';
import type { RunSummary } from '../../src/shared/api';
import { makeScratch, seedCompletedRun, trainConfigFor } from '../helpers/adversarial';
import { modelDir } from '../helpers/fixtures';

const FAKE_WORKER = fileURLToPath(new URL('../helpers/fake-worker.ts', import.meta.url));
const scratch = makeScratch('bridge');
let studio: Studio;
let bridge: RunningBridge;
let earlierRunId: string;

beforeAll(async () => {
  studio = Studio.open({
    appDataDir: path.join(scratch, 'app'),
    host: 'web',
    appVersion: '0.0.0',
    logger: silentLogger,
    resourcesDir: path.join(scratch, 'resources'),
    createTransport: () => createChildProcessTransport(FAKE_WORKER, { args: ['complete', '40'] }),
  });
  earlierRunId = seedCompletedRun(studio.store, 'llama-gqa-untied', 'earlier').id;
  bridge = await startBridge({ api: studio, rendererDir: path.join(scratch, 'renderer'), logger: silentLogger });
});

afterAll(async () => {
  await bridge.close();
  await studio.close();
  fs.rmSync(scratch, { recursive: true, force: true });
});

interface Reply {
  status: number;
  body: { value?: unknown; error?: { code: string; message?: string; hint?: string } };
}

async function call(route: string, body: string, headers: Record<string, string> = {}): Promise<Reply> {
  const response = await fetch(`${bridge.url}${route}`, {
    method: 'POST',
    headers: { [TOKEN_HEADER]: bridge.token, 'content-type': 'application/json', connection: 'close', ...headers },
    body,
  });
  return { status: response.status, body: (await response.json()) as Reply['body'] };
}

function api(method: string, request: unknown = {}): Promise<Reply> {
  return call(`/api/${method}`, JSON.stringify(request));
}

/** The server responds and the completed run recorded before the test is unchanged. */
async function expectHealthy(): Promise<void> {
  const listed = await api('runs/list');
  expect(listed.status).toBe(200);
  const earlier = (listed.body.value as RunSummary[]).find((run) => run.id === earlierRunId);
  expect(earlier?.status).toBe('completed');
  expect(earlier?.name).toBe('earlier');
}

function startRequest(maxSteps: number) {
  const config = trainConfigFor(modelDir('llama-gqa-untied'), { maxSteps, saveSteps: 5, evalSteps: 0 });
  return { config };
}

async function waitForStatus(id: string, statuses: string[]): Promise<string> {
  for (let attempt = 0; attempt < 300; attempt++) {
    const status = studio.store.getRun(id).status;
    if (statuses.includes(status)) return status;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`run ${id} stayed ${studio.store.getRun(id).status}`);
}

describe('requests that never reach a service', () => {
  it('missing and wrong tokens are 401', async () => {
    for (const token of ['', 'wrong', `${bridge.token}x`]) {
      const reply = await call('/api/runs/list', '{}', { [TOKEN_HEADER]: token });
      expect(reply.status).toBe(401);
      expect(reply.body.error?.code).toBe('UNAUTHORIZED');
    }
    await expectHealthy();
  });

  it('prototype member names are unknown methods', async () => {
    for (const route of ['runs/constructor', 'runs/toString', 'runs/hasOwnProperty', 'foo/bar']) {
      const reply = await call(`/api/${route}`, '{}');
      expect(reply.status).toBe(404);
      expect(reply.body.error?.message).toContain(route.replace('/', '.'));
    }
    await expectHealthy();
  });

  it('body over 1 MB is 400', async () => {
    const reply = await call('/api/runs/list', `{"padding":"${'x'.repeat(2 * 1024 * 1024)}"}`);
    expect(reply.status).toBe(400);
    expect(reply.body.error?.message).toContain('larger than 1048576 bytes');
    await expectHealthy();
  });

  it('non-object bodies are 400 with the received value', async () => {
    for (const [body, shown] of [['[]', '[]'], ['"x"', '"x"'], ['42', '42']]) {
      const reply = await call('/api/runs/get', body);
      expect(reply.status).toBe(400);
      expect(reply.body.error?.message).toContain(`received ${shown}`);
    }
    await expectHealthy();
  });

  it('dot-dot and relative paths are rejected or resolved', async () => {
    const relative = await api('models/inspect', { path: 'models/../x' });
    expect(relative.status).toBe(400);
    expect(relative.body.error?.message).toContain('path must be absolute');
    const dotted = await api('models/inspect', { path: `${scratch}/../${path.basename(scratch)}/missing` });
    expect(dotted.status).toBe(422);
    expect(dotted.body.error?.message).toContain(path.join(scratch, 'missing'));
  });

  // decodeURIComponent throws "URI malformed" on "/%E0%A4%A", and the bridge answers 400, not 500.
  it('malformed percent-encoding is a client error', async () => {
    const response = await fetch(`${bridge.url}/%E0%A4%A`, { headers: { [TOKEN_HEADER]: bridge.token } });
    expect(response.status).toBeLessThan(500);
  });

  // A 100000-deep JSON array parses, but the schema error message (JSON.stringify of the received
  // value) would overflow the stack, so the bridge rejects deep nesting before validation.
  it('deeply nested body is 400', async () => {
    const reply = await call('/api/runs/get', '['.repeat(100_000) + ']'.repeat(100_000));
    expect(reply.status).toBe(400);
  });
});

describe('requests with bad paths', () => {
  // The importer raises Node's EISDIR error (formats.ts:89), toErrorPayload passes it through
  // (errors.ts:54) and JSON drops its non-enumerable message: the body is
  // {"error":{"errno":-21,"code":"EISDIR","syscall":"read"}} with status 500.
  it('dataset import of a folder names the path', async () => {
    const folder = path.join(scratch, 'a-folder.jsonl');
    fs.mkdirSync(folder, { recursive: true });
    const reply = await api('datasets/import', { path: folder });
    expect(reply.body.error?.message).toContain(folder);
  });

  // "destination exists and is not empty" is EXPORT_FAILED, and the request is what has to change.
  it('export to a non-empty folder is a client error', async () => {
    const destination = path.join(scratch, 'export-non-empty');
    fs.mkdirSync(destination, { recursive: true });
    fs.writeFileSync(path.join(destination, 'keep.txt'), 'keep');
    const reply = await api('exports/start', { runId: earlierRunId, kind: 'peft', destination });
    expect(reply.body.error?.code).toBe('EXPORT_FAILED');
    expect(reply.status).toBeLessThan(500);
  });
});

describe('run lifecycle races', () => {
  it('completed run rejects resume, cancel and pause', async () => {
    for (const method of ['runs/resume', 'runs/cancel', 'runs/pause']) {
      const reply = await api(method, { id: earlierRunId });
      expect(reply.status).toBe(409);
      expect(reply.body.error?.code).toBe('RUN_STATE');
      expect(reply.body.error?.message).toContain(earlierRunId);
    }
    await expectHealthy();
  });

  it('running run cannot be deleted', async () => {
    const started = await api('runs/start', startRequest(400));
    const id = (started.body.value as RunSummary).id;
    await waitForStatus(id, ['running']);

    const reply = await api('runs/remove', { id });
    expect(reply.status).toBe(409);
    expect(reply.body.error?.hint).toContain('Cancel the run first');
    expect(fs.existsSync(studio.store.getRun(id).runDir)).toBe(true);

    await api('runs/cancel', { id });
    expect(await waitForStatus(id, ['cancelled', 'completed'])).toBe('cancelled');
    await expectHealthy();
  });

  // runs/pause is left out: the fake worker pauses even after a cancel, which the real worker
  // (engine/worker.ts) ignores.
  it('concurrent start, cancel, remove and resume stay consistent', async () => {
    const started = await api('runs/start', startRequest(400));
    const id = (started.body.value as RunSummary).id;
    await waitForStatus(id, ['running']);

    const replies = await Promise.all([
      api('runs/cancel', { id }),
      api('runs/remove', { id }),
      api('runs/cancel', { id }),
      api('runs/resume', { id }),
      api('runs/remove', { id }),
      api('runs/start', startRequest(3)),
    ]);
    for (const reply of replies) {
      expect([200, 409]).toContain(reply.status);
      if (reply.status === 409) expect(reply.body.error?.code).toBe('RUN_STATE');
    }

    expect(await waitForStatus(id, ['cancelled'])).toBe('cancelled');
    const queued = (replies[5].body.value as RunSummary).id;
    expect(await waitForStatus(queued, ['completed'])).toBe('completed');

    const removed = await api('runs/remove', { id });
    expect(removed.status).toBe(200);
    expect(fs.existsSync(path.join(scratch, 'app', 'runs', id))).toBe(false);
    await expectHealthy();
  });
});
