/**
 * The renderer's Pinia stores against a real Studio (SQLite file and dataset folder in a temp
 * dir, the fixture GPT-2 model, and the protocol test worker for runs).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPinia, setActivePinia } from 'pinia';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { setStudioClient } from '../../src/renderer/src/api';
import { diffConfigs } from '../../src/renderer/src/config-diff';
import { useDatasetsStore } from '../../src/renderer/src/stores/datasets';
import { useModelsStore } from '../../src/renderer/src/stores/models';
import { useRunsStore } from '../../src/renderer/src/stores/runs';
import { buildConfig, defaultTargets, useSettingsStore, validateForm } from '../../src/renderer/src/stores/settings';
import { useSystemStore } from '../../src/renderer/src/stores/system';
import type { StudioClient } from '../../src/shared/api';
import { silentLogger } from '../../src/services/jobs';
import { Studio } from '../../src/services/studio';
import { createChildProcessTransport } from '../../src/services/transport/child-process';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURE_MODEL = path.resolve(here, '..', '..', '..', 'shared', 'fixtures', 'models', 'gpt2-tiny');
const FAKE_WORKER = path.resolve(here, '..', 'helpers', 'fake-worker.ts');
const hasFixture = existsSync(path.join(FIXTURE_MODEL, 'config.json'));

let dir: string;
let studio: Studio;
let datasetFile: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'studio-stores-'));
  studio = Studio.open({
    appDataDir: path.join(dir, 'data'),
    host: 'web',
    appVersion: '0.0.0',
    logger: silentLogger,
    resourcesDir: path.join(dir, 'resources'),
    createTransport: () => createChildProcessTransport(FAKE_WORKER, { args: ['complete', '5'] }),
  });
  setStudioClient(studio as unknown as StudioClient);
  datasetFile = path.join(dir, 'pairs.jsonl');
  const lines = Array.from({ length: 8 }, (_, index) => JSON.stringify({ prompt: `Q${index}?`, completion: ` A${index}` }));
  lines.splice(3, 0, '{"prompt": }');
  writeFileSync(datasetFile, lines.join('\n'));
});

afterAll(async () => {
  setStudioClient(undefined);
  await studio.close();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  setActivePinia(createPinia());
});

describe('models store', () => {
  test.skipIf(!hasFixture)('inspect fixture model', async () => {
    const models = useModelsStore();
    const info = await models.inspect(FIXTURE_MODEL);
    expect(info?.architecture).toBe('GPT2LMHeadModel');
    expect(models.current?.linearModules).toContain('c_attn');
    expect(models.ready).toBe(true);
    expect(models.error).toBeNull();
    await models.loadRecent();
    expect(models.recent.map((entry) => entry.path)).toContain(FIXTURE_MODEL);
  });

  test('inspect missing folder sets error', async () => {
    const models = useModelsStore();
    const info = await models.inspect(path.join(dir, 'no-such-model'));
    expect(info).toBeNull();
    expect(models.error?.code).toBeDefined();
    expect(models.error?.message).toContain('no-such-model');
    expect(models.ready).toBe(false);
  });
});

describe('datasets store', () => {
  test('import keeps report and skipped line', async () => {
    const datasets = useDatasetsStore();
    const detail = await datasets.importFile(datasetFile);
    expect(detail?.rows).toBe(8);
    expect(datasets.current?.report.rowsSkipped).toBe(1);
    expect(datasets.current?.report.skipped[0].line).toBe(4);
    expect(datasets.importing).toBe(false);
    expect(datasets.progress?.bytesRead).toBe(datasets.progress?.totalBytes);
    expect(datasets.list.some((entry) => entry.id === detail?.id)).toBe(true);
  });

  test('preview separates prompt and completion', async () => {
    const datasets = useDatasetsStore();
    await datasets.importFile(datasetFile);
    await datasets.loadPreview();
    const first = datasets.preview?.examples[0];
    expect(first?.segments).toEqual([
      { text: 'Q0?', trained: false },
      { text: ' A0', trained: true },
    ]);
  });

  test('import of missing file sets error', async () => {
    const datasets = useDatasetsStore();
    expect(await datasets.importFile(path.join(dir, 'missing.jsonl'))).toBeNull();
    expect(datasets.error?.code).toBe('NOT_FOUND');
  });
});

describe('settings store', () => {
  test('default targets prefer attention projections', () => {
    expect(defaultTargets(['q_proj', 'k_proj', 'v_proj', 'o_proj'])).toEqual(['q_proj', 'v_proj']);
    expect(defaultTargets(['c_attn', 'attn.c_proj', 'c_fc'])).toEqual(['c_attn']);
    expect(defaultTargets(['dense_a', 'dense_b', 'dense_c'])).toEqual(['dense_a', 'dense_b']);
  });

  test('steps mode sends max steps', () => {
    const settings = useSettingsStore();
    settings.form.stopBy = 'steps';
    settings.form.maxSteps = 12;
    const config = buildConfig(settings.form, '/models/x', 'ds-1');
    expect(config.maxSteps).toBe(12);
    settings.form.stopBy = 'epochs';
    expect(buildConfig(settings.form, '/models/x', 'ds-1').maxSteps).toBe(0);
  });

  test('preset sets its values', () => {
    const settings = useSettingsStore();
    settings.applyPreset('quick');
    expect(settings.form.r).toBe(4);
    expect(settings.form.stopBy).toBe('steps');
    expect(settings.preset).toBe('quick');
  });

  test.skipIf(!hasFixture)('form errors name fields', async () => {
    const models = useModelsStore();
    const settings = useSettingsStore();
    const info = (await models.inspect(FIXTURE_MODEL))!;
    settings.adoptModel(info);
    expect(settings.form.targetModules).toEqual(['c_attn']);
    expect(validateForm(settings.form, info, 'ds-1')).toEqual({});

    settings.form.r = 0;
    settings.form.learningRate = '';
    settings.form.maxSeqLength = info.contextLength + 1;
    settings.form.targetModules = ['q_proj'];
    const errors = validateForm(settings.form, info, undefined);
    expect(errors.r).toBe('Rank must be at least 1');
    expect(errors.learningRate).toBe('Learning rate must be a number');
    expect(errors.maxSeqLength).toContain(String(info.contextLength));
    expect(errors.targetModules).toBe('Not in this model: q_proj');
    expect(errors.dataset).toBe('Choose a dataset');
  });

  test.skipIf(!hasFixture)('estimate fills trainable count', async () => {
    const settings = useSettingsStore();
    const datasets = useDatasetsStore();
    const detail = (await datasets.importFile(datasetFile))!;
    const config = buildConfig(settings.form, FIXTURE_MODEL, detail.id);
    config.lora.targetModules = ['c_attn'];
    await settings.refreshEstimate(config);
    expect(settings.estimateError).toBeNull();
    // GPT-2 tiny: 2 layers of c_attn [64 → 192]; LoRA adds r · (in + out) per layer.
    expect(settings.estimate?.trainableParameters).toBe(2 * 8 * (64 + 192));
    expect(settings.estimate?.memoryBytes).toBeGreaterThan(0);
  });
});

describe('runs store', () => {
  test.skipIf(!hasFixture)('run lifecycle through events', async () => {
    const runs = useRunsStore();
    const datasets = useDatasetsStore();
    runs.subscribe();
    const detail = (await datasets.importFile(datasetFile))!;
    const config = { ...buildConfig(useSettingsStore().form, FIXTURE_MODEL, detail.id), name: 'store run', maxSteps: 4, evalSteps: 2 };

    const run = await runs.start(config);
    expect(runs.startError).toBeNull();
    expect(run?.name).toBe('store run');
    expect(runs.currentRunId).toBe(run!.id);

    await expect.poll(() => runs.current?.status, { timeout: 30_000 }).toBe('completed');
    expect(runs.live[run!.id].metrics.map((m) => m.step)).toEqual([1, 2, 3, 4]);
    expect(runs.live[run!.id].logs.length).toBeGreaterThan(0);
    expect(runs.current?.bestValLoss).toBeCloseTo(1 + 1 / 4);

    await runs.rename(run!.id, 'renamed run');
    expect(runs.byId(run!.id)?.name).toBe('renamed run');
    await runs.setTags(run!.id, ['baseline', 'tiny']);
    expect(runs.byId(run!.id)?.tags).toEqual(['baseline', 'tiny']);

    const fetched = await runs.fetchDetail(run!.id);
    expect(fetched?.config.maxSteps).toBe(4);
    expect(fetched?.metrics.length).toBe(4);

    const runDir = path.join(dir, 'data', 'runs', run!.id);
    expect(existsSync(runDir)).toBe(true);
    expect(await runs.remove(run!.id)).toBe(true);
    expect(runs.byId(run!.id)).toBeUndefined();
    expect(existsSync(runDir)).toBe(false);
    runs.unsubscribe();
  });

  test('action on missing run sets error', async () => {
    const runs = useRunsStore();
    await runs.act('pause', 'run-missing');
    expect(runs.error?.code).toBe('NOT_FOUND');
  });

  test('config diff lists changed keys', () => {
    const settings = useSettingsStore();
    const first = buildConfig(settings.form, '/m', 'ds-1');
    const second = { ...first, learningRate: 1e-3, lora: { ...first.lora, r: 16 } };
    expect(diffConfigs([first, second])).toEqual([
      { key: 'learningRate', values: ['0.0002', '0.001'] },
      { key: 'lora.r', values: ['8', '16'] },
    ]);
  });
});

describe('system store', () => {
  test('info reports capabilities and folder', async () => {
    const system = useSystemStore();
    await system.load();
    expect(system.info?.appDataDir).toBe(path.join(dir, 'data'));
    expect(system.capabilities?.training).toBe(true);
    expect(system.capabilities?.dialogs).toBe(false);
    expect(system.reasonUnavailable('dialogs')).toContain('type paths');
  });
});
