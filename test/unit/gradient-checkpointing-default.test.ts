/**
 * The default of gradient checkpointing: on for QLoRA, off for LoRA, and an explicit choice kept.
 * The shared rule, the API schema, the CLI flags and a stored run each apply it. The attention
 * memory budget takes the same paths and is checked on them too.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { formatHelp, parseCommand } from '../../src/cli/args';
import { TRAINING_OPTIONS, configFromFlags } from '../../src/cli/train-options';
import { dispatchRequest, trainConfigSchema, validateRequest } from '../../src/shared/api';
import { DEFAULT_TRAIN_CONFIG, attentionBytesFromMiB, resolveGradientCheckpointing, type TrainConfig } from '../../src/shared/train-config';
import { silentLogger } from '../../src/services/jobs';
import { Studio } from '../../src/services/studio';
import { createChildProcessTransport } from '../../src/services/transport/child-process';
import { catchStudioError } from '../helpers/adversarial';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURE_MODEL = path.resolve(here, '..', '..', '..', 'shared', 'fixtures', 'models', 'gpt2-tiny');
const FAKE_WORKER = path.resolve(here, '..', 'helpers', 'fake-worker.ts');
const hasFixture = existsSync(path.join(FIXTURE_MODEL, 'config.json'));
const QUANT = { quantType: 'nf4', blocksize: 64, doubleQuant: true } as const;

/** Builds a request config as an HTTP client may send it, without gradientCheckpointing. */
function requestConfig(overrides: Partial<TrainConfig> = {}): Omit<TrainConfig, 'gradientCheckpointing'> {
  const { gradientCheckpointing: _omitted, ...defaults } = structuredClone(DEFAULT_TRAIN_CONFIG);
  return { ...defaults, modelPath: '/models/tiny', datasetId: 'ds-1', ...overrides };
}

/** Parses a `train` argument list as the CLI does and builds its config. */
function cliConfig(argv: string[]): TrainConfig {
  const { values } = parseCommand(argv, TRAINING_OPTIONS, false);
  return configFromFlags(values, '/models/tiny', ['q_proj', 'v_proj']);
}

describe('resolveGradientCheckpointing', () => {
  test('qlora defaults to on', () => {
    expect(resolveGradientCheckpointing('qlora', undefined)).toBe(true);
  });

  test('qlora keeps an explicit false', () => {
    expect(resolveGradientCheckpointing('qlora', false)).toBe(false);
  });

  test('lora defaults to off', () => {
    expect(resolveGradientCheckpointing('lora', undefined)).toBe(false);
    expect(DEFAULT_TRAIN_CONFIG.gradientCheckpointing).toBe(false);
  });

  test('lora keeps an explicit true', () => {
    expect(resolveGradientCheckpointing('lora', true)).toBe(true);
  });
});

describe('train config schema defaults', () => {
  test('qlora without the field parses to on', () => {
    const parsed = trainConfigSchema.parse(requestConfig({ method: 'qlora', quant: QUANT }));
    expect(parsed.gradientCheckpointing).toBe(true);
  });

  test('qlora with explicit false stays off', () => {
    const parsed = trainConfigSchema.parse({ ...requestConfig({ method: 'qlora', quant: QUANT }), gradientCheckpointing: false });
    expect(parsed.gradientCheckpointing).toBe(false);
  });

  test('lora without the field parses to off', () => {
    expect(trainConfigSchema.parse(requestConfig()).gradientCheckpointing).toBe(false);
  });

  test('non-boolean value is rejected', () => {
    const result = trainConfigSchema.safeParse({ ...requestConfig(), gradientCheckpointing: 'yes' });
    expect(result.success).toBe(false);
    expect(result.error!.issues[0].path).toEqual(['gradientCheckpointing']);
  });

  test('start request keeps the attention budget', () => {
    const request = validateRequest('runs', 'start', { config: { ...requestConfig(), maxAttentionBytes: 64 * 1024 * 1024 } }) as { config: TrainConfig };
    expect(request.config.maxAttentionBytes).toBe(64 * 1024 * 1024);
    expect(request.config.gradientCheckpointing).toBe(false);
  });

  test('attention budget limits name the field', () => {
    const cases: [unknown, string][] = [
      [0, 'Max attention memory must be greater than 0'],
      [-5, 'Max attention memory must be greater than 0'],
      [1.5, 'Max attention memory must be a whole number of bytes'],
      [2 ** 41, 'Max attention memory must be at most 1048576 MiB'],
      ['64', 'Max attention memory must be a number'],
    ];
    for (const [value, message] of cases) {
      const result = trainConfigSchema.safeParse({ ...requestConfig(), maxAttentionBytes: value });
      expect(result.success, JSON.stringify(value)).toBe(false);
      expect(result.error!.issues[0].path).toEqual(['maxAttentionBytes']);
      expect(result.error!.issues[0].message).toBe(message);
    }
  });
});

describe('CLI checkpointing flags', () => {
  test('qlora turns checkpointing on', () => {
    expect(cliConfig(['--method', 'qlora']).gradientCheckpointing).toBe(true);
  });

  test('lora leaves checkpointing off', () => {
    expect(cliConfig([]).gradientCheckpointing).toBe(false);
    expect(cliConfig(['--method', 'lora']).gradientCheckpointing).toBe(false);
  });

  test('--no-gradient-checkpointing turns qlora default off', () => {
    expect(cliConfig(['--method', 'qlora', '--no-gradient-checkpointing']).gradientCheckpointing).toBe(false);
  });

  test('--gradient-checkpointing turns it on for lora', () => {
    expect(cliConfig(['--gradient-checkpointing']).gradientCheckpointing).toBe(true);
    expect(cliConfig(['--method', 'qlora', '--gradient-checkpointing']).gradientCheckpointing).toBe(true);
  });

  test('both flags together are rejected', () => {
    const error = catchStudioError(() => cliConfig(['--gradient-checkpointing', '--no-gradient-checkpointing']));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe('--gradient-checkpointing and --no-gradient-checkpointing were both given.');
  });

  test('base config choice survives without a flag', () => {
    const { values } = parseCommand(['--method', 'qlora'], TRAINING_OPTIONS, false);
    expect(configFromFlags(values, '/models/tiny', ['q_proj'], { gradientCheckpointing: false }).gradientCheckpointing).toBe(false);
    const { values: forced } = parseCommand(['--gradient-checkpointing'], TRAINING_OPTIONS, false);
    expect(configFromFlags(forced, '/models/tiny', ['q_proj'], { gradientCheckpointing: false }).gradientCheckpointing).toBe(true);
  });

  test('help names both flags and the defaults', () => {
    const help = formatHelp('lora-studio train [options]', 'Trains.', TRAINING_OPTIONS);
    expect(help).toMatch(/--gradient-checkpointing {2,}.*\(default: on for qlora, off for lora\)/);
    expect(help).toMatch(/--no-gradient-checkpointing {2,}\S/);
  });

  test('--max-attention-mb converts MiB to bytes', () => {
    expect(cliConfig(['--max-attention-mb', '64']).maxAttentionBytes).toBe(64 * 1024 * 1024);
    expect(cliConfig(['--max-attention-mb', '0.5']).maxAttentionBytes).toBe(512 * 1024);
    expect(cliConfig(['--max-attention-mb', '1e-9']).maxAttentionBytes).toBe(1);
    expect(cliConfig([]).maxAttentionBytes).toBeUndefined();
  });

  test('--max-attention-mb above 1 TiB is rejected', () => {
    const error = catchStudioError(() => cliConfig(['--max-attention-mb', '2000000']));
    expect(error.message).toBe('--max-attention-mb must be at most 1048576. Received: --max-attention-mb "2000000".');
  });
});

describe('attentionBytesFromMiB', () => {
  test('rounds a positive budget up to whole bytes', () => {
    expect(attentionBytesFromMiB(1)).toBe(1_048_576);
    expect(attentionBytesFromMiB(1e-7)).toBe(1);
    expect(attentionBytesFromMiB(0)).toBe(0);
    expect(attentionBytesFromMiB(-2)).toBe(-2 * 1_048_576);
  });
});

describe.skipIf(!hasFixture)('stored qlora run', () => {
  let dir: string;
  let studio: Studio;

  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'studio-checkpointing-'));
    studio = Studio.open({
      appDataDir: path.join(dir, 'data'),
      host: 'web',
      appVersion: '0.0.0',
      logger: silentLogger,
      resourcesDir: path.join(dir, 'resources'),
      engine: { qlora: true },
      createTransport: () => createChildProcessTransport(FAKE_WORKER, { args: ['complete', '0'] }),
    });
  });

  afterAll(async () => {
    await studio.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('keeps the resolved checkpointing value', async () => {
    const datasetFile = path.join(dir, 'rows.jsonl');
    writeFileSync(datasetFile, ['{"text": "one"}', '{"text": "two"}', '{"text": "three"}'].join('\n'));
    const dataset = await studio.datasets.import({ path: datasetFile });

    const config = requestConfig({ modelPath: FIXTURE_MODEL, datasetId: dataset.id, method: 'qlora', quant: QUANT, maxSteps: 2, evalSteps: 0, saveSteps: 0 });
    const run = (await dispatchRequest(studio, 'runs', 'start', { config })) as { id: string };
    await expect.poll(async () => (await studio.runs.get({ id: run.id })).run.status, { timeout: 30_000 }).toBe('completed');

    const detail = await studio.runs.get({ id: run.id });
    expect(detail.config.gradientCheckpointing).toBe(true);
    const started = readFileSync(path.join(dir, 'data', 'runs', run.id, 'start-messages.jsonl'), 'utf8').trim().split('\n');
    const message = JSON.parse(started[0]) as { config: TrainConfig };
    expect(message.config.gradientCheckpointing).toBe(true);
  });
});
