import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { DatasetService } from '../../../src/services/datasets';
import { RunStore } from '../../../src/services/store';
import { StudioError } from '../../../src/shared/errors';

let appDataDir: string;
let store: RunStore;

beforeEach(() => {
  appDataDir = mkdtempSync(path.join(tmpdir(), 'dataset-service-'));
  store = RunStore.open(appDataDir);
});
afterEach(() => {
  store.close();
  rmSync(appDataDir, { recursive: true, force: true });
});

function writeSource(name: string, content: string): string {
  const file = path.join(appDataDir, name);
  writeFileSync(file, content);
  return file;
}

describe('dataset service with run store', () => {
  it('import persists the record', async () => {
    const service = new DatasetService(appDataDir, store);
    const source = writeSource('pairs.jsonl', '{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n');

    const imported = await service.import(source, { name: 'Pairs' });
    const stored = store.getDataset(imported.id);

    expect(stored.name).toBe('Pairs');
    expect(stored.sourcePath).toBe(source);
    expect(stored.format).toBe('jsonl');
    expect(stored.schema).toBe('prompt_completion');
    expect(stored.sha256).toBe(imported.sha256);
    expect(stored.rowsRead).toBe(2);
    expect(stored.rowsKept).toBe(1);
    expect(stored.rowsSkipped).toBe(1);
    expect(stored.storedPath).toBe(imported.storedPath);
    expect(stored.report).toEqual(imported.report);
    expect(stored.createdAt).toBe(imported.createdAt);
    expect(service.list().map((d) => d.id)).toEqual([imported.id]);
  });

  it('remove deletes entry and folder', async () => {
    const service = new DatasetService(appDataDir, store);
    const imported = await service.import(writeSource('t.jsonl', '{"text": "x"}\n'));
    const folder = path.dirname(imported.storedPath);
    expect(existsSync(folder)).toBe(true);

    await service.remove(imported.id);

    expect(existsSync(folder)).toBe(false);
    expect(service.list()).toEqual([]);
    const error = (() => {
      try {
        service.get(imported.id);
      } catch (caught) {
        return caught;
      }
    })();
    expect(error).toBeInstanceOf(StudioError);
    expect((error as StudioError).code).toBe('NOT_FOUND');
  });

  it('failed import stores nothing', async () => {
    const service = new DatasetService(appDataDir, store);
    const error = await service.import(writeSource('empty.jsonl', '')).catch((e: unknown) => e);

    expect((error as StudioError).code).toBe('DATASET_EMPTY');
    expect(service.list()).toEqual([]);
  });

  it('works without a store', async () => {
    const service = new DatasetService(appDataDir);
    const imported = await service.import(writeSource('t.jsonl', '{"text": "x"}\n'));

    expect(imported.rowsKept).toBe(1);
    expect(existsSync(imported.storedPath)).toBe(true);
    expect(store.listDatasets()).toEqual([]);
  });
});
