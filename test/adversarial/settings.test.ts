/**
 * Hostile training settings, as CLI flags and as API requests: every bad number is rejected with
 * the flag or field and the received value, and the CLI accepts nothing the API would reject.
 */
import { describe, expect, it } from 'vitest';
import { configFromFlags } from '../../src/cli/train-options';
import { trainConfigSchema, validateRequest } from '../../src/shared/api';
import { StudioError } from '../../src/shared/errors';
import { DEFAULT_TRAIN_CONFIG, type TrainConfig } from '../../src/shared/train-config';
import { catchStudioError } from '../helpers/adversarial';

const MODEL = '/models/tiny';
const TARGETS = ['q_proj', 'v_proj'];

function flags(values: Record<string, unknown>): TrainConfig {
  return configFromFlags(values, MODEL, TARGETS);
}

/** A request body as the web UI sends it, with `config` fields replaced. */
function startRequest(overrides: Record<string, unknown>): unknown {
  return { config: { ...structuredClone(DEFAULT_TRAIN_CONFIG), modelPath: MODEL, datasetId: 'ds-1', ...overrides } };
}

describe('CLI numeric flags', () => {
  const numericFlags = [
    'lr', 'weight-decay', 'adam-beta1', 'adam-beta2', 'adam-epsilon', 'warmup-steps', 'max-steps', 'epochs', 'batch-size',
    'grad-accum', 'max-grad-norm', 'max-seq-length', 'validation-split', 'eval-steps', 'save-steps', 'seed', 'lora-r',
    'lora-alpha', 'lora-dropout', 'max-attention-mb',
  ];
  const badValues = ['NaN', 'Infinity', '-Infinity', 'abc', '', '  ', '0x', '1e400'];

  for (const flag of numericFlags) {
    it(`--${flag} rejects non-numbers`, () => {
      for (const value of badValues) {
        const error = catchStudioError(() => flags({ [flag]: value }));
        expect(error.code).toBe('INVALID_ARGUMENT');
        expect(error.message).toContain(`--${flag} must be`);
        expect(error.message).toContain(`Received: --${flag} ${JSON.stringify(value)}`);
      }
    });
  }

  it('negative sizes and counts are rejected', () => {
    for (const flag of ['lr', 'batch-size', 'grad-accum', 'max-steps', 'epochs', 'lora-r', 'lora-alpha', 'seed', 'warmup-steps']) {
      const error = catchStudioError(() => flags({ [flag]: '-1' }));
      expect(error.code).toBe('INVALID_ARGUMENT');
      expect(error.message).toContain(`Received: --${flag} "-1"`);
    }
  });

  it('zero where at least one is needed is rejected', () => {
    for (const flag of ['lr', 'batch-size', 'grad-accum', 'lora-r', 'lora-alpha', 'epochs', 'adam-epsilon']) {
      const error = catchStudioError(() => flags({ [flag]: '0' }));
      expect(error.message).toContain(`--${flag} must be`);
    }
  });

  it('fractions for integer flags are rejected', () => {
    const error = catchStudioError(() => flags({ 'batch-size': '2.5' }));
    expect(error.message).toBe('--batch-size must be an integer. Received: --batch-size "2.5".');
  });

  it('--max-seq-length 1 is rejected', () => {
    const error = catchStudioError(() => flags({ 'max-seq-length': '1' }));
    expect(error.message).toContain('--max-seq-length must be at least 2');
  });

  it('--validation-split 0.99999 is rejected', () => {
    const error = catchStudioError(() => flags({ 'validation-split': '0.99999' }));
    expect(error.message).toContain('--validation-split must be at most 0.9');
  });

  it('--schedule weird names the choices', () => {
    const error = catchStudioError(() => flags({ schedule: 'weird' }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe('--schedule must be constant, linear or cosine. Received: --schedule "weird".');
  });

  it('--target-modules of commas only is rejected', () => {
    const error = catchStudioError(() => flags({ 'target-modules': ' , ,' }));
    expect(error.message).toBe('--target-modules is empty.');
  });

  it('--layers-to-transform with junk is rejected', () => {
    const error = catchStudioError(() => flags({ 'layers-to-transform': '0,x,-1' }));
    expect(error.message).toContain('"0,x,-1"');
  });

  it('quantization flags without qlora are rejected', () => {
    const error = catchStudioError(() => flags({ 'quant-blocksize': '64' }));
    expect(error.hint).toContain('--method qlora');
  });
});

describe('CLI settings the API rejects', () => {
  // The CLI builds TrainConfig with its own bounds (train-options.ts:58-79, numberFlag without
  // `max`), and neither trainCommand (cli/train.ts:44) nor JobManager.start validates the
  // result with trainConfigSchema, which the web UI and IPC requests pass. So the CLI queues
  // runs the API rejects: r=100000 allocates rank-100000 LoRA matrices (an OOM on a real
  // model), batch 100000 and 10^9 steps run for days, and lr 1e9 is accepted. Validating
  // configFromFlags' result with trainConfigSchema (or sharing the bounds) fixes every case.
  const cases: [string, Record<string, string>][] = [
    ['--lora-r 100000', { 'lora-r': '100000' }],
    ['--batch-size 100000', { 'batch-size': '100000' }],
    ['--max-steps 1e9', { 'max-steps': '1e9' }],
    ['--lr 1e9', { lr: '1e9' }],
    ['--max-seq-length 2', { 'max-seq-length': '2' }],
    ['--validation-split 0.9', { 'validation-split': '0.9' }],
    ['--grad-accum 100000', { 'grad-accum': '100000' }],
  ];
  for (const [label, values] of cases) {
    // The CLI builds TrainConfig with its own flag bounds (numberFlag without `max`). The result must
    // also pass trainConfigSchema, which the web UI and IPC requests pass, or the CLI would queue runs
    // those reject: r=100000 allocates rank-100000 LoRA matrices (an OOM on a real model), batch
    // 100000 and 10^9 steps run for days, and lr 1e9 diverges.
    it(`${label} is rejected like the API rejects it`, () => {
      let config: TrainConfig | undefined;
      let error: unknown;
      try {
        config = flags(values);
      } catch (thrown) {
        error = thrown;
      }
      if (config) expect(trainConfigSchema.safeParse({ ...config, datasetId: 'ds-1' }).success).toBe(true);
      else expect(error).toBeInstanceOf(StudioError);
    });
  }
});

describe('API training settings', () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['negative learning rate', { learningRate: -1 }, 'config.learningRate'],
    ['zero learning rate', { learningRate: 0 }, 'config.learningRate'],
    ['NaN learning rate', { learningRate: Number.NaN }, 'config.learningRate'],
    ['infinite max steps', { maxSteps: Number.POSITIVE_INFINITY }, 'config.maxSteps'],
    ['string batch size', { batchSize: '4' }, 'config.batchSize'],
    ['huge batch size', { batchSize: 100_000 }, 'config.batchSize'],
    ['max steps 1e9', { maxSteps: 1e9 }, 'config.maxSteps'],
    ['max sequence length 1', { maxSeqLength: 1 }, 'config.maxSeqLength'],
    ['validation split 0.99999', { validationSplit: 0.99999 }, 'config.validationSplit'],
    ['unknown schedule', { schedule: 'weird' }, 'config.schedule'],
    ['fractional seed', { seed: 1.5 }, 'config.seed'],
    ['negative warmup', { warmupSteps: -5 }, 'config.warmupSteps'],
    ['dropout of 1', { lora: { ...DEFAULT_TRAIN_CONFIG.lora, loraDropout: 1 } }, 'config.lora.loraDropout'],
    ['rank 100000', { lora: { ...DEFAULT_TRAIN_CONFIG.lora, r: 100_000 } }, 'config.lora.r'],
    ['target module with a regex', { lora: { ...DEFAULT_TRAIN_CONFIG.lora, targetModules: ['.*'] } }, 'config.lora.targetModules.0'],
    ['relative model path', { modelPath: 'models/x' }, 'config.modelPath'],
    ['dataset id with dots', { datasetId: '../ds' }, 'config.datasetId'],
  ];

  for (const [label, overrides, field] of cases) {
    it(`runs.start rejects ${label}`, () => {
      const error = catchStudioError(() => validateRequest('runs', 'start', startRequest(overrides)));
      expect(error.code).toBe('INVALID_ARGUMENT');
      expect(error.message).toContain(`${field}:`);
    });
  }

  it('rejection shows the received value', () => {
    const error = catchStudioError(() => validateRequest('runs', 'start', startRequest({ batchSize: 100_000 })));
    expect(error.message).toContain('Batch size must be at most 4096 (received 100000)');
  });

  it('warmup longer than max steps is rejected', () => {
    const error = catchStudioError(() => validateRequest('runs', 'estimate', startRequest({ maxSteps: 10, warmupSteps: 11 })));
    expect(error.message).toContain('config.warmupSteps: Warmup steps must not exceed max steps');
  });
});
