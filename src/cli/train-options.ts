/**
 * The training flags shared by `train` and `demo`, and their mapping onto TrainConfig.
 */
import { trainConfigSchema } from '../shared/api';
import { StudioError } from '../shared/errors';
import { DEFAULT_TRAIN_CONFIG, MAX_ATTENTION_MIB, attentionBytesFromMiB, resolveGradientCheckpointing, type Schedule, type TrainConfig } from '../shared/train-config';
import { numberFlag, stringFlag, type OptionTable } from './args';

const d = DEFAULT_TRAIN_CONFIG;

export const TRAINING_OPTIONS: OptionTable = {
  lr: { type: 'string', help: `learning rate (default ${d.learningRate})` },
  'weight-decay': { type: 'string', help: `AdamW decoupled weight decay (default ${d.weightDecay})` },
  'adam-beta1': { type: 'string', help: `AdamW beta1 (default ${d.adamBeta1})` },
  'adam-beta2': { type: 'string', help: `AdamW beta2 (default ${d.adamBeta2})` },
  'adam-epsilon': { type: 'string', help: `AdamW epsilon (default ${d.adamEpsilon})` },
  schedule: { type: 'string', help: `learning-rate schedule: constant, linear or cosine (default ${d.schedule})` },
  'warmup-steps': { type: 'string', help: `linear warmup in optimizer steps (default ${d.warmupSteps})` },
  'max-steps': { type: 'string', help: 'stop after this many optimizer steps; 0 trains for --epochs (default 0)' },
  epochs: { type: 'string', help: `passes over the training set when --max-steps is 0 (default ${d.epochs})` },
  'batch-size': { type: 'string', help: `examples per micro-batch (default ${d.batchSize})` },
  'grad-accum': { type: 'string', help: `micro-batches per optimizer step (default ${d.gradientAccumulationSteps})` },
  'max-grad-norm': { type: 'string', help: `global-norm gradient clipping; 0 turns it off (default ${d.maxGradNorm})` },
  'max-seq-length': { type: 'string', help: `truncate examples to this many tokens (default ${d.maxSeqLength})` },
  'lora-r': { type: 'string', help: `LoRA rank r (default ${d.lora.r})` },
  'lora-alpha': { type: 'string', help: `LoRA alpha; scaling = alpha / r (default ${d.lora.loraAlpha})` },
  'lora-dropout': { type: 'string', help: `dropout on the LoRA input (default ${d.lora.loraDropout})` },
  'target-modules': { type: 'string', help: 'comma-separated module names (q_proj,v_proj / c_attn) or all-linear (default: the model family\'s attention projections)' },
  'layers-to-transform': { type: 'string', help: 'comma-separated layer indices to adapt (default: all)' },
  rslora: { type: 'boolean', help: 'use rsLoRA scaling alpha / sqrt(r)' },
  'init-lora-weights': { type: 'string', help: 'lora_A initialization: kaiming or gaussian (default kaiming)' },
  'validation-split': { type: 'string', help: `fraction of rows held out for validation (default ${d.validationSplit})` },
  validation: { type: 'string', help: 'separate validation file (replaces --validation-split)' },
  'train-on-prompt': { type: 'boolean', help: 'also take the loss on prompt and user tokens' },
  packing: { type: 'boolean', help: 'pack short examples into sequences of --max-seq-length' },
  'eval-steps': { type: 'string', help: `validation loss every N steps (default ${d.evalSteps})` },
  'save-steps': { type: 'string', help: `checkpoint every N steps (default ${d.saveSteps})` },
  seed: { type: 'string', help: `random seed for initialization, shuffling and dropout (default ${d.seed})` },
  'gradient-checkpointing': { type: 'boolean', help: 'recompute block activations in the backward pass to save memory, for one more forward pass per step (default: on for qlora, off for lora)' },
  'no-gradient-checkpointing': { type: 'boolean', help: 'keep block activations from the forward pass; turns off the qlora default' },
  method: { type: 'string', help: 'lora, or qlora to hold base weights in 4 bits (default lora)' },
  'quant-type': { type: 'string', help: 'qlora code book: nf4 or fp4 (default nf4)' },
  'quant-blocksize': { type: 'string', help: 'qlora absmax block size, 32 to 4096 (default 64)' },
  'no-double-quant': { type: 'boolean', help: 'qlora: keep absmax constants in float32 instead of 8 bits' },
  'max-attention-mb': { type: 'string', help: 'memory budget for attention scores in MiB, up to 1048576; computes attention in query chunks (default: no chunking)' },
  'init-adapter': { type: 'string', help: 'PEFT adapter folder to continue training from' },
  'sample-prompt': { type: 'string', multiple: true, help: 'prompt to generate from before and after training (repeatable)' },
  backend: { type: 'string', help: 'force a backend: tensorflow-gpu, tensorflow, wasm or cpu' },
  name: { type: 'string', help: 'run name shown in the history' },
};

/** Builds a TrainConfig from parsed flags over the defaults (or `base`). */
export function configFromFlags(values: Record<string, unknown>, modelPath: string, defaultTargets: string[], base: Partial<TrainConfig> = {}): TrainConfig {
  const config: TrainConfig = structuredClone({ ...DEFAULT_TRAIN_CONFIG, ...base, modelPath });
  config.lora = { ...DEFAULT_TRAIN_CONFIG.lora, targetModules: defaultTargets, ...(base.lora ?? {}) };

  const set = <K extends keyof TrainConfig>(key: K, value: TrainConfig[K] | undefined) => {
    if (value !== undefined) config[key] = value;
  };
  set('learningRate', numberFlag(values, 'lr', { min: 0, exclusiveMin: true }));
  set('weightDecay', numberFlag(values, 'weight-decay', { min: 0 }));
  set('adamBeta1', numberFlag(values, 'adam-beta1', { min: 0, max: 0.999999 }));
  set('adamBeta2', numberFlag(values, 'adam-beta2', { min: 0, max: 0.999999 }));
  set('adamEpsilon', numberFlag(values, 'adam-epsilon', { min: 0, exclusiveMin: true }));
  set('warmupSteps', numberFlag(values, 'warmup-steps', { integer: true, min: 0 }));
  set('maxSteps', numberFlag(values, 'max-steps', { integer: true, min: 0 }));
  set('epochs', numberFlag(values, 'epochs', { min: 0, exclusiveMin: true }));
  set('batchSize', numberFlag(values, 'batch-size', { integer: true, min: 1 }));
  set('gradientAccumulationSteps', numberFlag(values, 'grad-accum', { integer: true, min: 1 }));
  set('maxGradNorm', numberFlag(values, 'max-grad-norm', { min: 0 }));
  set('maxSeqLength', numberFlag(values, 'max-seq-length', { integer: true, min: 2 }));
  set('validationSplit', numberFlag(values, 'validation-split', { min: 0, max: 0.9 }));
  set('evalSteps', numberFlag(values, 'eval-steps', { integer: true, min: 0 }));
  set('saveSteps', numberFlag(values, 'save-steps', { integer: true, min: 0 }));
  set('seed', numberFlag(values, 'seed', { integer: true, min: 0 }));
  set('validationPath', stringFlag(values, 'validation'));
  set('initAdapter', stringFlag(values, 'init-adapter'));
  set('backend', stringFlag(values, 'backend'));
  set('name', stringFlag(values, 'name'));
  if (values['train-on-prompt']) config.trainOnPrompt = true;
  if (values.packing) config.packing = true;
  if (Array.isArray(values['sample-prompt'])) config.samplePrompts = values['sample-prompt'] as string[];

  const schedule = stringFlag(values, 'schedule');
  if (schedule !== undefined) {
    if (!['constant', 'linear', 'cosine'].includes(schedule)) {
      throw new StudioError('INVALID_ARGUMENT', `--schedule must be constant, linear or cosine. Received: --schedule ${JSON.stringify(schedule)}.`, 'Use --schedule cosine, for example.');
    }
    config.schedule = schedule as Schedule;
  }
  const method = stringFlag(values, 'method');
  if (method !== undefined) {
    if (method !== 'lora' && method !== 'qlora') {
      throw new StudioError('INVALID_ARGUMENT', `--method must be lora or qlora. Received: --method ${JSON.stringify(method)}.`, 'Use --method lora.');
    }
    config.method = method;
  }
  if (config.method === 'qlora') {
    const quantType = stringFlag(values, 'quant-type') ?? 'nf4';
    if (quantType !== 'nf4' && quantType !== 'fp4') {
      throw new StudioError('INVALID_ARGUMENT', `--quant-type must be nf4 or fp4. Received: --quant-type ${JSON.stringify(quantType)}.`, 'Use --quant-type nf4.');
    }
    const blocksize = numberFlag(values, 'quant-blocksize', { integer: true, min: 32, max: 4096 }) ?? 64;
    config.quant = { quantType, blocksize, doubleQuant: !values['no-double-quant'] };
  } else if (values['quant-type'] !== undefined || values['quant-blocksize'] !== undefined || values['no-double-quant']) {
    throw new StudioError('INVALID_ARGUMENT', 'Quantization flags apply only with --method qlora.', 'Add --method qlora, or drop the --quant-* flags.');
  }
  config.gradientCheckpointing = resolveGradientCheckpointing(config.method, checkpointingFlag(values) ?? base.gradientCheckpointing);
  const attentionMiB = numberFlag(values, 'max-attention-mb', { min: 0, exclusiveMin: true, max: MAX_ATTENTION_MIB });
  if (attentionMiB !== undefined) config.maxAttentionBytes = attentionBytesFromMiB(attentionMiB);

  const r = numberFlag(values, 'lora-r', { integer: true, min: 1 });
  if (r !== undefined) config.lora.r = r;
  const alpha = numberFlag(values, 'lora-alpha', { min: 0, exclusiveMin: true });
  if (alpha !== undefined) config.lora.loraAlpha = alpha;
  const dropout = numberFlag(values, 'lora-dropout', { min: 0, max: 0.99 });
  if (dropout !== undefined) config.lora.loraDropout = dropout;
  if (values.rslora) config.lora.useRslora = true;
  const init = stringFlag(values, 'init-lora-weights');
  if (init !== undefined) {
    if (init !== 'kaiming' && init !== 'gaussian') {
      throw new StudioError('INVALID_ARGUMENT', `--init-lora-weights must be kaiming or gaussian. Received: ${JSON.stringify(init)}.`, 'Use --init-lora-weights gaussian, for example.');
    }
    config.lora.initLoraWeights = init;
  }
  const targets = stringFlag(values, 'target-modules');
  if (targets !== undefined) {
    const list = targets.split(',').map((t) => t.trim()).filter(Boolean);
    if (list.length === 0) throw new StudioError('INVALID_ARGUMENT', '--target-modules is empty.', 'Name modules, e.g. --target-modules q_proj,v_proj, or use all-linear.');
    config.lora.targetModules = list.length === 1 && list[0] === 'all-linear' ? 'all-linear' : list;
  }
  const layers = stringFlag(values, 'layers-to-transform');
  if (layers !== undefined) {
    const list = layers.split(',').map((t) => Number(t.trim()));
    if (list.some((n) => !Number.isInteger(n) || n < 0)) {
      throw new StudioError('INVALID_ARGUMENT', `--layers-to-transform must be comma-separated layer indices. Received: ${JSON.stringify(layers)}.`, 'Use e.g. --layers-to-transform 0,1,2.');
    }
    config.lora.layersToTransform = list;
  }
  assertApiAccepts(config);
  return config;
}

/** Returns true for --gradient-checkpointing, false for --no-gradient-checkpointing, undefined for neither. */
function checkpointingFlag(values: Record<string, unknown>): boolean | undefined {
  const on = values['gradient-checkpointing'] === true;
  const off = values['no-gradient-checkpointing'] === true;
  if (on && off) {
    throw new StudioError('INVALID_ARGUMENT', '--gradient-checkpointing and --no-gradient-checkpointing were both given.', 'Keep one of the two flags.');
  }
  if (on) return true;
  if (off) return false;
  return undefined;
}

/** The flag that sets each TrainConfig field, keyed by the field's path. */
const FLAG_BY_FIELD: Record<string, string> = {
  name: 'name',
  modelPath: 'model',
  validationPath: 'validation',
  validationSplit: 'validation-split',
  method: 'method',
  'lora.r': 'lora-r',
  'lora.loraAlpha': 'lora-alpha',
  'lora.loraDropout': 'lora-dropout',
  'lora.targetModules': 'target-modules',
  'lora.layersToTransform': 'layers-to-transform',
  'lora.useRslora': 'rslora',
  'lora.initLoraWeights': 'init-lora-weights',
  'quant.quantType': 'quant-type',
  'quant.blocksize': 'quant-blocksize',
  'quant.doubleQuant': 'no-double-quant',
  initAdapter: 'init-adapter',
  learningRate: 'lr',
  weightDecay: 'weight-decay',
  adamBeta1: 'adam-beta1',
  adamBeta2: 'adam-beta2',
  adamEpsilon: 'adam-epsilon',
  schedule: 'schedule',
  warmupSteps: 'warmup-steps',
  maxSteps: 'max-steps',
  epochs: 'epochs',
  batchSize: 'batch-size',
  gradientAccumulationSteps: 'grad-accum',
  maxGradNorm: 'max-grad-norm',
  maxSeqLength: 'max-seq-length',
  evalSteps: 'eval-steps',
  saveSteps: 'save-steps',
  seed: 'seed',
  gradientCheckpointing: 'gradient-checkpointing',
  maxAttentionBytes: 'max-attention-mb',
  samplePrompts: 'sample-prompt',
  backend: 'backend',
};

/**
 * Raises INVALID_ARGUMENT, naming the flag, when the settings break a limit of the schema that
 * the web UI and desktop requests pass, so the CLI starts no run those would reject.
 */
function assertApiAccepts(config: TrainConfig): void {
  // The dataset is imported after the flags are read, so a placeholder id replaces it here.
  const result = trainConfigSchema.safeParse({ ...config, datasetId: config.datasetId ?? 'pending' });
  if (result.success) return;

  const issue = result.error.issues[0];
  const field = issue.path.map(String).filter((part) => !/^\d+$/.test(part)).join('.');
  const flag = FLAG_BY_FIELD[field];
  const value = issue.path.reduce<unknown>((node, key) => (node as Record<PropertyKey, unknown> | undefined)?.[key as PropertyKey], config);
  const subject = flag ? `--${flag}` : field || 'the training settings';
  throw new StudioError(
    'INVALID_ARGUMENT',
    `${subject}: ${issue.message.replace(/\.$/, '')}. Received: ${JSON.stringify(value)}.`,
    flag ? `Change --${flag} to a value within the limit.` : 'Change the training flags to values within the limits.',
  );
}
