/**
 * The memory fields of the settings form: the gradient checkpointing checkbox that follows the
 * method until the user changes it, and the attention budget in MiB with its inline errors. The
 * estimate runs against a real Studio with the fixture GPT-2 model.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPinia, setActivePinia } from 'pinia';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { setStudioClient } from '../../src/renderer/src/api';
import { useDatasetsStore } from '../../src/renderer/src/stores/datasets';
import { useModelsStore } from '../../src/renderer/src/stores/models';
import { FIELD_LABELS, buildConfig, useSettingsStore, validateForm } from '../../src/renderer/src/stores/settings';
import type { ModelInfo, StudioClient } from '../../src/shared/api';
import { silentLogger } from '../../src/services/jobs';
import { Studio } from '../../src/services/studio';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURE_MODEL = path.resolve(here, '..', '..', '..', 'shared', 'fixtures', 'models', 'gpt2-tiny');
const hasFixture = existsSync(path.join(FIXTURE_MODEL, 'config.json'));
const MIB = 1024 * 1024;

let dir: string;
let studio: Studio;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'studio-memory-form-'));
  studio = Studio.open({ appDataDir: path.join(dir, 'data'), host: 'web', appVersion: '0.0.0', logger: silentLogger, resourcesDir: path.join(dir, 'resources') });
  setStudioClient(studio as unknown as StudioClient);
});

afterAll(async () => {
  setStudioClient(undefined);
  await studio.close();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  setActivePinia(createPinia());
});

/** Returns the fixture model's info and adopts it into the settings form. */
async function adoptFixture(): Promise<ModelInfo> {
  const info = (await useModelsStore().inspect(FIXTURE_MODEL))!;
  useSettingsStore().adoptModel(info);
  return info;
}

describe('gradient checkpointing checkbox', () => {
  test('lora form starts unchecked', () => {
    const settings = useSettingsStore();
    expect(settings.form.gradientCheckpointing).toBeNull();
    expect(settings.gradientCheckpointing).toBe(false);
    expect(buildConfig(settings.form, '/models/x', 'ds-1').gradientCheckpointing).toBe(false);
  });

  test('switching to qlora checks it', () => {
    const settings = useSettingsStore();
    settings.form.method = 'qlora';
    expect(settings.gradientCheckpointing).toBe(true);
    expect(buildConfig(settings.form, '/models/x', 'ds-1').gradientCheckpointing).toBe(true);
    settings.form.method = 'lora';
    expect(settings.gradientCheckpointing).toBe(false);
  });

  test('unchecking under qlora sticks', () => {
    const settings = useSettingsStore();
    settings.form.method = 'qlora';
    settings.setGradientCheckpointing(false);
    expect(settings.gradientCheckpointing).toBe(false);
    expect(buildConfig(settings.form, '/models/x', 'ds-1').gradientCheckpointing).toBe(false);

    settings.form.method = 'lora';
    settings.form.method = 'qlora';
    expect(settings.gradientCheckpointing).toBe(false);
    expect(buildConfig(settings.form, '/models/x', 'ds-1').gradientCheckpointing).toBe(false);
  });

  test('checking under lora sticks', () => {
    const settings = useSettingsStore();
    settings.setGradientCheckpointing(true);
    settings.form.method = 'qlora';
    settings.form.method = 'lora';
    expect(buildConfig(settings.form, '/models/x', 'ds-1').gradientCheckpointing).toBe(true);
  });

  test('reset follows the method again', () => {
    const settings = useSettingsStore();
    settings.setGradientCheckpointing(false);
    settings.reset();
    settings.form.method = 'qlora';
    expect(settings.form.gradientCheckpointing).toBeNull();
    expect(settings.gradientCheckpointing).toBe(true);
  });

  test('presets leave the choice alone', () => {
    const settings = useSettingsStore();
    settings.form.method = 'qlora';
    settings.setGradientCheckpointing(false);
    settings.applyPreset('quick');
    expect(settings.gradientCheckpointing).toBe(false);
    expect(settings.preset).toBe('quick');
  });
});

describe('max attention memory field', () => {
  test('empty field sends no budget', () => {
    const settings = useSettingsStore();
    expect(settings.form.maxAttentionMiB).toBe('');
    expect('maxAttentionBytes' in buildConfig(settings.form, '/models/x', 'ds-1')).toBe(false);
  });

  test('MiB become bytes', () => {
    const settings = useSettingsStore();
    settings.form.maxAttentionMiB = 64;
    expect(buildConfig(settings.form, '/models/x', 'ds-1').maxAttentionBytes).toBe(64 * MIB);
    settings.form.maxAttentionMiB = 0.25;
    expect(buildConfig(settings.form, '/models/x', 'ds-1').maxAttentionBytes).toBe(MIB / 4);
  });

  test('budget keeps the preset match', () => {
    const settings = useSettingsStore();
    settings.form.maxAttentionMiB = 128;
    expect(settings.preset).toBe('balanced');
  });

  test('summary label names the field', () => {
    expect(FIELD_LABELS.maxAttentionMiB).toBe('Max attention memory (MiB)');
  });

  test.skipIf(!hasFixture)('invalid budgets show inline errors', async () => {
    const info = await adoptFixture();
    const settings = useSettingsStore();
    const cases: [number, string][] = [
      [0, 'Max attention memory must be greater than 0'],
      [-16, 'Max attention memory must be greater than 0'],
      [2_000_000, 'Max attention memory must be at most 1048576 MiB'],
    ];
    for (const [value, message] of cases) {
      settings.form.maxAttentionMiB = value;
      const errors = validateForm(settings.form, info, 'ds-1');
      expect(errors.maxAttentionMiB, String(value)).toBe(message);
      expect(Object.keys(errors), String(value)).toEqual(['maxAttentionMiB']);
    }
  });

  test.skipIf(!hasFixture)('valid budgets pass validation', async () => {
    const info = await adoptFixture();
    const settings = useSettingsStore();
    for (const value of ['', 1e-6, 64, 1_048_576] as const) {
      settings.form.maxAttentionMiB = value;
      expect(validateForm(settings.form, info, 'ds-1'), String(value)).toEqual({});
    }
  });
});

describe.skipIf(!hasFixture)('memory estimate', () => {
  test('the estimate follows the checkpointing checkbox', async () => {
    await adoptFixture();
    const settings = useSettingsStore();
    const datasetFile = path.join(dir, 'pairs.jsonl');
    writeFileSync(datasetFile, Array.from({ length: 8 }, (_, index) => JSON.stringify({ prompt: `Q${index}?`, completion: ` A${index}` })).join('\n'));
    const dataset = (await useDatasetsStore().importFile(datasetFile))!;
    settings.form.method = 'qlora';

    await settings.refreshEstimate(buildConfig(settings.form, FIXTURE_MODEL, dataset.id));
    expect(settings.estimateError).toBeNull();
    const checkpointed = settings.estimate!;

    settings.setGradientCheckpointing(false);
    await settings.refreshEstimate(buildConfig(settings.form, FIXTURE_MODEL, dataset.id));
    expect(settings.estimateError).toBeNull();
    const withoutCheckpointing = settings.estimate!;
    // Recomputing each block costs one more forward pass; the two-block fixture saves no memory by it.
    expect(checkpointed.seconds).toBeGreaterThan(withoutCheckpointing.seconds ?? Infinity);
    expect(checkpointed.memoryBytes).toBeLessThanOrEqual(withoutCheckpointing.memoryBytes);
  });
});
