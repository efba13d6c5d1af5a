/**
 * QLoRA and memory benchmark.
 *
 *   npm run bench:memory [-- --quick] [--json FILE] [--only weights,peaks,validation] [--layers NAME=N] [--backend wasm|cpu]
 *
 * Three parts, each measured in child processes of this script (one per measurement), so that
 * one measurement's process RSS and wasm heap never include another's:
 *
 * 1. weights: bytes per base linear-layer parameter for float32, NF4 and NF4 with double
 *    quantization, from the engine's byte count of the tensors the model holds.
 * 2. peaks: peak tfjs memory, process RSS and step time of full fine-tuning, LoRA and QLoRA, each
 *    with and without gradient checkpointing, on GPT-2-124M and SmolLM-135M shapes (random
 *    weights, the same random tokens), with the pre-run estimate (`estimateTraining`) beside them.
 * 3. validation: validation loss of LoRA and QLoRA after the same steps on the pretrained demo
 *    model and its chat data.
 *
 * Method and results: docs/BENCHMARKS.md.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { trackLiveBytes } from './live-bytes';
import { parseBackendName, selectBackend } from '../src/engine/backend';
import { encodeRecord, splitTrainValidation, type TrainingExample } from '../src/engine/data/encode';
import { normalizeRow } from '../src/engine/data/normalize';
import { estimateTraining } from '../src/engine/estimate';
import { applyLora, loraVariables } from '../src/engine/lora';
import { batchLoss, loadModel, type Batch } from '../src/engine/models';
import { GradientCheckpointing } from '../src/engine/models/checkpointing';
import { readModelConfig, locateModelFiles, readModelWeights } from '../src/engine/models/loader';
import { inspectModel } from '../src/engine/models/inspect';
import { CausalLM } from '../src/engine/models/transformer';
import { quantizeModel } from '../src/engine/quant';
import { loadTokenizer } from '../src/engine/tokenizer';
import { AdamW, clipGlobalNorm } from '../src/engine/train/optimizer';
import { collate, Trainer, type Example } from '../src/engine/train/trainer';
import { DEFAULT_TRAIN_CONFIG, type LoraSettings, type QuantSettings, type TrainConfig } from '../src/shared/train-config';
import { writeRandomModel, type ModelShape } from './scenarios';
import { randomExamples } from './measure';

// ---------------------------------------------------------------------------------------------
// Settings

type Method = 'full' | 'lora' | 'qlora';
type Part = 'weights' | 'peaks' | 'validation';

const GPT2_124M: ModelShape = { family: 'gpt2', hidden: 768, layers: 12, heads: 12, kvHeads: 12, intermediate: 3072, vocab: 50257, positions: 1024, ropeTheta: 0 };
const SMOLLM_135M: ModelShape = { family: 'llama', hidden: 576, layers: 30, heads: 9, kvHeads: 3, intermediate: 1536, vocab: 49152, positions: 2048, ropeTheta: 10000 };

/** The LoRA settings of every LoRA and QLoRA measurement, on all linear layers. */
const LORA: LoraSettings = { r: 16, loraAlpha: 32, loraDropout: 0.05, targetModules: 'all-linear', useRslora: false, initLoraWeights: 'kaiming' };
const NF4_DOUBLE: QuantSettings = { quantType: 'nf4', blocksize: 64, doubleQuant: true };
const NF4_SINGLE: QuantSettings = { quantType: 'nf4', blocksize: 64, doubleQuant: false };

/** One model of the peak measurements, at the depth a mode uses. */
interface ModelPlan {
  name: string;
  shape: ModelShape;
  /** The real model's depth. */
  realLayers: number;
}

interface PeakPlan {
  models: ModelPlan[];
  methods: Method[];
  seq: number;
  batch: number;
  /** Timed steps after the warm-up step, by method; the profiled step follows them. */
  timedSteps: Record<Method, number>;
}

/**
 * Quick mode keeps every width, vocabulary and head layout but cuts the depth to 2 (GPT-2) or 4
 * (SmolLM) layers. Full mode trains the real depths; `--layers` sets another depth. Both compare all three methods on the same
 * seq 128 × batch 2 of random tokens. Full fine-tuning gets no timed step in quick mode (its
 * step time is the profiled step's), because on the wasm matmul alone its step takes 40–50 s.
 */
function peakPlan(quick: boolean, layers: Map<string, number>): PeakPlan {
  const model = (name: string, shape: ModelShape, quickLayers: number): ModelPlan => ({
    name,
    shape: { ...shape, layers: layers.get(name) ?? (quick ? quickLayers : shape.layers) },
    realLayers: shape.layers,
  });
  const models = [model('gpt2-124m', GPT2_124M, 2), model('smollm-135m', SMOLLM_135M, 4)];
  if (quick) {
    return {
      models,
      methods: ['full', 'lora', 'qlora'],
      seq: 128,
      batch: 2,
      timedSteps: { full: 0, lora: 1, qlora: 1 },
    };
  }
  return {
    models,
    methods: ['full', 'lora', 'qlora'],
    seq: 128,
    batch: 2,
    timedSteps: { full: 1, lora: 1, qlora: 1 },
  };
}

/** The validation-loss comparison on the demo model: the demo's own settings (`npm run demo`), 60 steps. */
const VALIDATION = {
  steps: 60,
  batchSize: 8,
  maxSeqLength: 128,
  learningRate: 3e-3,
  warmupSteps: 5,
  validationSplit: 0.1,
  seed: 42,
};

// ---------------------------------------------------------------------------------------------
// Results

interface WeightResult {
  model: string;
  parameters: number;
  linearParameters: number;
  /** Bytes of the linear-layer weights per linear parameter, by storage. */
  linearBytesPerParameter: { fp32: number; nf4: number; nf4DoubleQuant: number };
  /** The quantization module's own count of the bytes it holds, NF4 + double quantization, for comparison. */
  reportedBytesPerParameter: number;
  /** All base tensors of the model (embeddings and norms stay float32) per base parameter. */
  modelBytesPerParameter: { fp32: number; nf4: number; nf4DoubleQuant: number };
}

interface PeakResult {
  model: string;
  method: Method;
  checkpointing: boolean;
  available: boolean;
  note?: string;
  layers?: number;
  seq?: number;
  batch?: number;
  trainableParameters?: number;
  /** tf.memory().numBytes with the model, adapters and optimizer state loaded, before the first step. */
  bytesAtRest?: number;
  /** tf.memory().numBytes after a step: weights, adapters, optimizer moments and cached tables. */
  bytesBetweenSteps?: number;
  /** tf.memory().numBytes at its highest during the profiled step. */
  peakBytes?: number;
  /** tf.profile's peakBytes: every tensor counted, shared buffers as often as they are shared. */
  tensorPeakBytes?: number;
  /** Process RSS at its highest, sampled after each step. */
  peakRssBytes?: number;
  /** The operating system's high-water mark of the process RSS (loading included). */
  maxRssBytes?: number;
  /** Median wall time of the timed steps; absent when no step was timed. */
  stepMs?: number;
  stepCpuMs?: number;
  /** Wall time of the profiled step, with tf.profile's per-kernel bookkeeping. */
  profiledStepMs?: number;
  /** estimateTraining(inspectModel(dir), config).memory; absent for full fine-tuning, which it does not model. */
  estimate?: { weightsBytes: number; loraBytes: number; optimizerBytes: number; activationsBytes: number; totalBytes: number };
  /** estimate.totalBytes ÷ peakBytes − 1. */
  estimateError?: number;
}

interface ValidationResult {
  method: 'lora' | 'qlora';
  available: boolean;
  note?: string;
  trainExamples?: number;
  validationExamples?: number;
  valLossBefore?: number;
  valLossAfter?: number;
  finalTrainLoss?: number;
  steps?: number;
  stepMs?: number;
  modelSha256?: string;
}

type Task =
  | { kind: 'weights'; model: string; dir: string }
  | { kind: 'peak'; model: string; dir: string; method: Method; checkpointing: boolean; seq: number; batch: number; timedSteps: number; backend?: string }
  | { kind: 'validation'; method: 'lora' | 'qlora'; modelDir: string; dataFile: string };

const RESULT_PREFIX = '@@memory-bench-result ';
const log = (line: string) => process.stderr.write(`[bench:memory] ${line}\n`);

// ---------------------------------------------------------------------------------------------
// Child: one measurement

async function runTask(task: Task, backend: string | undefined): Promise<unknown> {
  await selectBackend({ force: parseBackendName(backend), log: () => undefined });
  if (task.kind === 'weights') return measureWeights(task.model, task.dir);
  if (task.kind === 'peak') return measurePeak(task);
  return measureValidation(task.method, task.modelDir, task.dataFile);
}

/** Loads the model three times: float32, NF4, and NF4 with double quantization. */
function measureWeights(name: string, dir: string): WeightResult {
  const storage = (settings: QuantSettings | null) => {
    const before = tf.memory().numBytes;
    const model = loadModel(dir).model;
    const modelBytes = tf.memory().numBytes - before;
    const layers = model.linearLayers();
    const linearParameters = layers.reduce((sum, layer) => sum + layer.inFeatures * layer.outFeatures, 0);
    const biasBytes = layers.reduce((sum, layer) => sum + (layer.bias ? 4 * layer.bias.size : 0), 0);
    // Float32 kernels: the bytes the engine counts for the linear layers' own tensors.
    let linearBytes = layers.reduce((sum, layer) => sum + (layer.kernel ? bytesOf(layer.kernel) : 0), 0);
    let reported = 0;
    let quantizedModelBytes = modelBytes;
    if (settings) {
      const beforeQuantization = tf.memory().numBytes;
      const report = quantizeModel(model, settings);
      const change = tf.memory().numBytes - beforeQuantization;
      // Quantization frees each float32 kernel and uploads its packed codes and constants, so
      // the engine's byte count moves by exactly (quantized − float32) bytes.
      linearBytes += change;
      quantizedModelBytes += change;
      reported = report.bytes / report.quantizedParameters;
    }
    const result = { parameters: model.parameterCount(), linearParameters, linearBytes, biasBytes, modelBytes: quantizedModelBytes, reported };
    model.dispose();
    return result;
  };

  log(`${name}: base weight storage`);
  const fp32 = storage(null);
  const nf4 = storage(NF4_SINGLE);
  const nf4Double = storage(NF4_DOUBLE);
  return {
    model: name,
    parameters: fp32.parameters,
    linearParameters: fp32.linearParameters,
    linearBytesPerParameter: {
      fp32: fp32.linearBytes / fp32.linearParameters,
      nf4: nf4.linearBytes / nf4.linearParameters,
      nf4DoubleQuant: nf4Double.linearBytes / nf4Double.linearParameters,
    },
    reportedBytesPerParameter: nf4Double.reported,
    modelBytesPerParameter: {
      fp32: fp32.modelBytes / fp32.parameters,
      nf4: nf4.modelBytes / nf4.parameters,
      nf4DoubleQuant: nf4Double.modelBytes / nf4Double.parameters,
    },
  };
}

function bytesOf(tensor: tf.Tensor): number {
  return tensor.size * (tensor.dtype === 'float32' || tensor.dtype === 'int32' ? 4 : 1);
}

/** Run settings of a LoRA or QLoRA peak measurement, as the trainer and the estimate receive them. */
function peakConfig(task: Extract<Task, { kind: 'peak' }>): TrainConfig {
  return {
    ...DEFAULT_TRAIN_CONFIG,
    modelPath: task.dir,
    method: task.method === 'qlora' ? 'qlora' : 'lora',
    quant: task.method === 'qlora' ? NF4_DOUBLE : undefined,
    lora: LORA,
    batchSize: task.batch,
    // Every example is exactly `seq` tokens long.
    maxSeqLength: task.seq,
    maxSteps: 1_000_000,
    warmupSteps: 0,
    schedule: 'constant',
    learningRate: 2e-4,
    gradientCheckpointing: task.checkpointing,
  };
}

/** A training step and its cleanup, for full fine-tuning or for the LoRA trainer. */
interface Stepper {
  trainableParameters: number;
  step(): void;
  dispose(): void;
}

function measurePeak(task: Extract<Task, { kind: 'peak' }>): Promise<PeakResult> {
  const label = `${task.model} ${task.method}${task.checkpointing ? ' + checkpointing' : ''}`;
  const config = peakConfig(task);
  const info = inspectModel(task.dir);
  const examples = randomExamples(4 * task.batch, task.seq, Math.min(GPT2_124M.vocab, SMOLLM_135M.vocab), 7);

  log(`${label}: loading ${info.numLayers} layers`);
  const stepper = task.method === 'full' ? fullFineTuning(task.dir, examples, config) : loraTraining(task.dir, examples, config);
  return measureSteps(label, task, stepper).then((measured) => {
    const result: PeakResult = { model: task.model, method: task.method, checkpointing: task.checkpointing, available: true, layers: info.numLayers, seq: task.seq, batch: task.batch, ...measured };
    if (task.method !== 'full') {
      result.estimate = estimateTraining(info, config).memory;
      result.estimateError = result.estimate.totalBytes / result.peakBytes! - 1;
    }
    return result;
  });
}

async function measureSteps(label: string, task: Extract<Task, { kind: 'peak' }>, stepper: Stepper): Promise<Partial<PeakResult>> {
  try {
    let peakRss = process.memoryUsage().rss;
    const sampleRss = () => (peakRss = Math.max(peakRss, process.memoryUsage().rss));
    const bytesAtRest = tf.memory().numBytes;

    log(`${label}: warm-up step`);
    stepper.step();
    sampleRss();

    const times: number[] = [];
    const cpuTimes: number[] = [];
    for (let i = 0; i < task.timedSteps; i++) {
      const cpuStart = process.cpuUsage();
      const start = performance.now();
      stepper.step();
      times.push(performance.now() - start);
      const cpu = process.cpuUsage(cpuStart);
      cpuTimes.push((cpu.user + cpu.system) / 1000);
      sampleRss();
      log(`${label}: step ${i + 1}/${task.timedSteps} ${times[i].toFixed(0)} ms`);
    }

    log(`${label}: profiled step`);
    const liveBytes = trackLiveBytes();
    const profileStart = performance.now();
    const profile = await tf.profile(() => stepper.step());
    const profiledStepMs = performance.now() - profileStart;
    // Buffers really held at the highest point (wasm); tfjs's own figure counts a buffer once per
    // tensor that shares it.
    const peakBytes = liveBytes?.peak() ?? profile.peakBytes;
    liveBytes?.stop();
    sampleRss();
    return {
      trainableParameters: stepper.trainableParameters,
      bytesAtRest,
      bytesBetweenSteps: tf.memory().numBytes,
      peakBytes,
      tensorPeakBytes: profile.peakBytes,
      peakRssBytes: peakRss,
      maxRssBytes: process.resourceUsage().maxRSS * 1024,
      stepMs: times.length ? median(times) : undefined,
      stepCpuMs: cpuTimes.length ? median(cpuTimes) : undefined,
      profiledStepMs,
    };
  } finally {
    stepper.dispose();
  }
}

/** Builds the trainer's step with LoRA (or QLoRA) adapters on every linear layer. */
function loraTraining(dir: string, examples: Example[], config: TrainConfig): Stepper {
  // QLoRA loads as the app does: quantized on the host, without float32 kernels on the backend.
  const model = loadModel(dir, { quantize: config.quant }).model;
  applyLora(model, config.lora, config.seed);
  const trainer = new Trainer({ model, train: examples, settings: config, padTokenId: 0 });
  return {
    trainableParameters: loraVariables(model).reduce((sum, variable) => sum + variable.size, 0),
    step: () => void trainer.trainStep(),
    dispose: () => {
      trainer.dispose();
      model.dispose();
    },
  };
}

/**
 * Builds a full fine-tuning step: every base weight a `tf.Variable`, AdamW on all of them, with the trainer's
 * clipping and, when set, its per-block gradient checkpointing.
 */
function fullFineTuning(dir: string, examples: Example[], config: TrainConfig): Stepper {
  const modelConfig = readModelConfig(dir);
  const weights = readModelWeights(locateModelFiles(dir), (name) => !/\.attn\.(masked_)?bias$/.test(name));
  const model = new CausalLM(modelConfig, weights, dir, { trainableBase: true });
  weights.clear();
  // NOTE: GPT-2's position table stays frozen. Its lookup is tf.gather, whose gradient needs the
  // UnsortedSegmentSum kernel that tfjs-backend-wasm 4.22 lacks (the token embedding uses a
  // ScatterNd gradient instead). The table contains 0.6 % of GPT-2-124M's parameters.
  const variables = trainableTensors(model).filter((variable) => variable !== model.positionEmbeddings);
  const optimizer = new AdamW({ beta1: config.adamBeta1, beta2: config.adamBeta2, epsilon: config.adamEpsilon, weightDecay: config.weightDecay });
  let stepIndex = 0;
  return {
    trainableParameters: variables.reduce((sum, variable) => sum + variable.size, 0),
    step: () => {
      const start = (stepIndex * config.batchSize) % examples.length;
      const batch: Batch = collate(examples.slice(start, start + config.batchSize), 0);
      let call = 0;
      const context = { training: true, nextSeed: () => call++ };
      const checkpointing = config.gradientCheckpointing ? new GradientCheckpointing(context) : null;
      const options = { context: checkpointing ? checkpointing.context : context, recomputeBlock: checkpointing?.recomputeBlock };
      let computed: { value: tf.Scalar; grads: tf.NamedTensorMap };
      try {
        computed = tf.variableGrads(() => batchLoss(model, batch, options), variables);
      } finally {
        checkpointing?.dispose();
      }
      computed.value.dataSync();
      computed.value.dispose();
      const gradients = new Map(Object.entries(computed.grads));
      clipGlobalNorm(gradients, config.maxGradNorm);
      optimizer.apply(variables, gradients, config.learningRate);
      for (const gradient of gradients.values()) gradient.dispose();
      stepIndex++;
    },
    dispose: () => {
      optimizer.dispose();
      model.dispose();
    },
  };
}

/** Returns every `tf.Variable` of a model loaded with `trainableBase`: embeddings, norms, linear kernels and biases. */
function trainableTensors(model: CausalLM): tf.Variable[] {
  const norms = [model.finalNorm, ...model.blocks.flatMap((block) => [block.inputNorm, block.postAttentionNorm])];
  const tensors: Array<tf.Tensor | null> = [
    model.embedTokens,
    model.positionEmbeddings,
    ...norms.flatMap((norm) => [norm.weight, norm.bias]),
    ...model.linearLayers().flatMap((layer) => [layer.kernel, layer.bias]),
  ];
  return tensors.filter((tensor): tensor is tf.Variable => tensor !== null && (tensor as Partial<tf.Variable>).trainable === true);
}

/** Trains LoRA or QLoRA on the demo model and chat data and returns the validation loss before and after. */
async function measureValidation(method: 'lora' | 'qlora', modelDir: string, dataFile: string): Promise<ValidationResult> {
  const tokenizer = await loadTokenizer(modelDir);
  const examples = encodeChatFile(dataFile, tokenizer);
  const { train, validation } = splitTrainValidation(examples, VALIDATION.validationSplit, VALIDATION.seed);

  const config: TrainConfig = {
    ...DEFAULT_TRAIN_CONFIG,
    modelPath: modelDir,
    method,
    quant: method === 'qlora' ? NF4_DOUBLE : undefined,
    lora: LORA,
    learningRate: VALIDATION.learningRate,
    schedule: 'cosine',
    warmupSteps: VALIDATION.warmupSteps,
    maxSteps: VALIDATION.steps,
    batchSize: VALIDATION.batchSize,
    maxSeqLength: VALIDATION.maxSeqLength,
    seed: VALIDATION.seed,
  };
  const model = loadModel(modelDir, { quantize: config.quant }).model;
  applyLora(model, config.lora, config.seed);
  const trainer = new Trainer({ model, train, validation, settings: config, padTokenId: tokenizer.padTokenId ?? 0 });
  try {
    const valLossBefore = trainer.evaluate()!;
    log(`validation ${method}: ${train.length} training and ${validation.length} validation examples, loss before ${valLossBefore.toFixed(4)}`);
    const times: number[] = [];
    let finalTrainLoss = NaN;
    while (trainer.step < trainer.totalSteps) {
      const result = trainer.trainStep();
      times.push(result.timeMs);
      finalTrainLoss = result.loss;
      if (result.step % 20 === 0) log(`validation ${method}: step ${result.step}/${trainer.totalSteps} loss ${result.loss.toFixed(4)}`);
    }
    const valLossAfter = trainer.evaluate()!;
    return {
      method,
      available: true,
      trainExamples: train.length,
      validationExamples: validation.length,
      valLossBefore,
      valLossAfter,
      finalTrainLoss,
      steps: trainer.step,
      stepMs: median(times),
      modelSha256: crypto.createHash('sha256').update(fs.readFileSync(path.join(modelDir, 'model.safetensors'))).digest('hex'),
    };
  } finally {
    trainer.dispose();
    model.dispose();
  }
}

/**
 * Encodes a JSONL file of `{"messages": [...]}` rows with the model's chat template, the loss on
 * assistant tokens only, as a run of the app does (rows without a target token are dropped).
 */
function encodeChatFile(file: string, tokenizer: Awaited<ReturnType<typeof loadTokenizer>>): TrainingExample[] {
  const examples: TrainingExample[] = [];
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  lines.forEach((line, index) => {
    if (line.trim() === '') return;
    const normalized = normalizeRow(JSON.parse(line), 'messages');
    if (!normalized.ok) throw new Error(`${file}:${index + 1}: ${normalized.message}.`);
    const encoded = encodeRecord(normalized.record, tokenizer, { maxSeqLength: VALIDATION.maxSeqLength });
    if (!encoded.ok) throw new Error(`${file}:${index + 1}: ${encoded.message}.`);
    if (encoded.example.labels.some((label, i) => i > 0 && label !== -100)) examples.push(encoded.example);
  });
  return examples;
}

// ---------------------------------------------------------------------------------------------
// Parent: plan, run children, print and save

interface Options {
  quick: boolean;
  json: string | null;
  parts: Part[];
  backend: string | undefined;
  /** Depth overrides by model name. */
  layers: Map<string, number>;
}

const USAGE = `Usage: npm run bench:memory -- [--quick] [--json FILE] [--only weights,peaks,validation] [--layers NAME=N[,NAME=N]] [--backend wasm|cpu]
  --quick    2 GPT-2 and 4 SmolLM layers instead of 12 and 30
  --json     also write the results as JSON to FILE
  --only     run only the named parts (default: all three)
  --layers   train gpt2-124m or smollm-135m at N layers (for a depth whose step fits the wasm heap)
  --backend  force a tfjs backend (default: the engine's own choice)`;

function parseOptions(argv: string[]): Options {
  const options: Options = { quick: false, json: null, parts: ['weights', 'peaks', 'validation'], backend: undefined, layers: new Map() };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${arg} needs a value.\n${USAGE}`);
      return next;
    };
    if (arg === '--quick') options.quick = true;
    else if (arg === '--json') options.json = value();
    else if (arg === '--backend') options.backend = value();
    else if (arg === '--layers') {
      for (const entry of value().split(',')) {
        const [name, count] = entry.split('=');
        const layers = Number(count);
        if (!['gpt2-124m', 'smollm-135m'].includes(name) || !Number.isInteger(layers) || layers < 1) {
          throw new Error(`--layers expects NAME=N with NAME gpt2-124m or smollm-135m and N a positive integer. Received: ${entry}.`);
        }
        options.layers.set(name, layers);
      }
    }
    else if (arg === '--only') {
      const parts = value().split(',');
      const unknown = parts.filter((part) => !['weights', 'peaks', 'validation'].includes(part));
      if (unknown.length) throw new Error(`Unknown part ${unknown.join(', ')}. Known: weights, peaks, validation.`);
      options.parts = parts as Part[];
    } else if (arg === '--help' || arg === '-h') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else throw new Error(`Unknown option ${arg}.\n${USAGE}`);
  }
  return options;
}

/** Runs one task in a child process of this script and returns what it printed as its result. */
function runChild<T>(task: Task, backend: string | undefined): { ok: true; value: T } | { ok: false; note: string } {
  const script = fileURLToPath(import.meta.url);
  const args = ['--enable-source-maps', '--max-old-space-size=8192', script, '--task', JSON.stringify(task), ...(backend ? ['--backend', backend] : [])];
  const child = spawnSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 * 2 ** 20 });
  const line = child.stdout?.split('\n').find((l) => l.startsWith(RESULT_PREFIX));
  if (child.status === 0 && line) return { ok: true, value: JSON.parse(line.slice(RESULT_PREFIX.length)) as T };
  const cause = child.signal ? `signal ${child.signal}` : `exit code ${child.status}`;
  const detail = child.stdout?.split('\n').find((l) => l.startsWith('@@memory-bench-error '))?.slice('@@memory-bench-error '.length);
  // An Emscripten abort or an out-of-bounds trap is what the wasm backend does when its heap,
  // capped at 4 GiB (getHeapMax in tfjs-backend-wasm 4.22), cannot grow further.
  const heapFull = detail !== undefined && /Aborted\(\)|memory access out of bounds/.test(detail);
  return { ok: false, note: `failed (${cause})${heapFull ? ', out of wasm heap' : ''}${detail ? `: ${detail}` : ''}` };
}

function machineInfo(): Record<string, unknown> {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  return {
    nproc: os.availableParallelism(),
    cpu_model: /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model,
    memory_bytes: os.totalmem(),
    platform: `${process.platform}-${process.arch}`,
    node: process.versions.node,
    tfjs: tf.version_core,
  };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const taskIndex = argv.indexOf('--task');
  if (taskIndex >= 0) {
    const backendIndex = argv.indexOf('--backend');
    await runChildTask(JSON.parse(argv[taskIndex + 1]) as Task, backendIndex >= 0 ? argv[backendIndex + 1] : undefined);
    return;
  }

  const options = parseOptions(argv);
  const report = await selectBackend({ force: parseBackendName(options.backend), log: () => undefined });
  const plan = peakPlan(options.quick, options.layers);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-studio-bench-memory-'));
  const started = performance.now();

  const weights: WeightResult[] = [];
  const peaks: PeakResult[] = [];
  const validation: ValidationResult[] = [];
  try {
    for (const model of plan.models) {
      if (!options.parts.includes('weights') && !options.parts.includes('peaks')) break;
      const dir = path.join(tmpRoot, model.name);
      log(`${model.name}: writing a random ${model.shape.family} checkpoint (${model.shape.layers} layers)`);
      writeRandomModel(dir, model.shape, 1234);

      if (options.parts.includes('weights')) {
        const result = runChild<WeightResult>({ kind: 'weights', model: model.name, dir }, options.backend);
        if (result.ok) weights.push(result.value);
        else log(`${model.name}: weights ${result.note}`);
      }
      if (options.parts.includes('peaks')) {
        for (const method of plan.methods) {
          for (const checkpointing of [false, true]) {
            const task: Task = { kind: 'peak', model: model.name, dir, method, checkpointing, seq: plan.seq, batch: plan.batch, timedSteps: plan.timedSteps[method] };
            const result = runChild<PeakResult>(task, options.backend);
            peaks.push(result.ok ? result.value : { model: model.name, method, checkpointing, available: false, note: result.note, layers: model.shape.layers, seq: plan.seq, batch: plan.batch });
          }
        }
      }
      fs.rmSync(dir, { recursive: true, force: true });
    }

    if (options.parts.includes('validation')) {
      const modelDir = path.join(root, 'resources', 'demo-model');
      const dataFile = path.join(root, 'resources', 'demo-data', 'chat-storyteller.jsonl');
      for (const method of ['lora', 'qlora'] as const) {
        const result = runChild<ValidationResult>({ kind: 'validation', method, modelDir, dataFile }, options.backend);
        validation.push(result.ok ? result.value : { method, available: false, note: result.note });
      }
    }
  } finally {
    fs.rmSync(tmpRoot, { recursive: true, force: true });
  }

  const minutes = (performance.now() - started) / 60_000;
  const matmul = report.nativeMatMul?.enabled ? `native matmul (${report.nativeMatMul.detail})` : 'wasm matmul';
  const header = `backend ${report.chosen} (${report.threads ?? 1} thread${report.threads === 1 || report.threads === undefined ? '' : 's'}), ${matmul}, ${options.quick ? 'quick' : 'full'} mode, ${minutes.toFixed(1)} min`;
  process.stdout.write(`\n${header}\n${formatReport(plan, weights, peaks, validation)}\n`);

  if (options.json) {
    const document = { date: new Date().toISOString(), mode: options.quick ? 'quick' : 'full', machine: machineInfo(), backend: report.chosen, nativeMatMul: report.nativeMatMul ?? null, plan, lora: LORA, quant: NF4_DOUBLE, validationSettings: VALIDATION, weights, peaks, validation };
    fs.writeFileSync(options.json, JSON.stringify(document, null, 2) + '\n');
    log(`wrote ${options.json}`);
  }
}

async function runChildTask(task: Task, backend: string | undefined): Promise<void> {
  try {
    const value = await runTask(task, backend);
    process.stdout.write(`${RESULT_PREFIX}${JSON.stringify(value)}\n`);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    process.stdout.write(`@@memory-bench-error ${message.split('\n')[0]}\n`);
    process.stderr.write(`${error instanceof Error ? (error.stack ?? message) : message}\n`);
    process.exitCode = 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Report tables

const MiB = 2 ** 20;

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]?.length ?? 0)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (c ?? '').padEnd(widths[i])).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

const fixed = (value: number | undefined, digits = 0) => (value === undefined || !Number.isFinite(value) ? '-' : value.toFixed(digits));
const percent = (value: number | undefined, signed = false) =>
  value === undefined || !Number.isFinite(value) ? '-' : `${signed && value >= 0 ? '+' : ''}${(100 * value).toFixed(1)}%`;

function formatReport(plan: PeakPlan, weights: WeightResult[], peaks: PeakResult[], validation: ValidationResult[]): string {
  const sections: string[] = [];
  if (weights.length) {
    sections.push(
      'Base weights, bytes per parameter (linear layers; whole model in brackets, embeddings and norms stay float32)',
      table(
        ['model', 'linear params', 'fp32', 'NF4', 'NF4 + double quant', 'quant module count'],
        weights.map((w) => [
          w.model,
          `${(w.linearParameters / 1e6).toFixed(1)}M of ${(w.parameters / 1e6).toFixed(1)}M`,
          `${fixed(w.linearBytesPerParameter.fp32, 3)} (${fixed(w.modelBytesPerParameter.fp32, 3)})`,
          `${fixed(w.linearBytesPerParameter.nf4, 4)} (${fixed(w.modelBytesPerParameter.nf4, 3)})`,
          `${fixed(w.linearBytesPerParameter.nf4DoubleQuant, 4)} (${fixed(w.modelBytesPerParameter.nf4DoubleQuant, 3)})`,
          fixed(w.reportedBytesPerParameter, 4),
        ]),
      ),
    );
  }
  if (peaks.length) {
    const depth = plan.models.map((m) => `${m.name} ${m.shape.layers} of ${m.realLayers} layers`).join(', ');
    sections.push(
      `\nPeak memory per step: seq ${plan.seq} × batch ${plan.batch}, ${depth}; LoRA r=${LORA.r} on all linear layers`,
      table(
        ['model', 'method', 'ckpt', 'trainable', 'at rest MiB', 'peak MiB', 'RSS MiB', 'step ms', 'CPU ms', 'est. MiB', 'est. error'],
        peaks.map((p) =>
          p.available
            ? [
                p.model,
                p.method,
                p.checkpointing ? 'yes' : 'no',
                `${((p.trainableParameters ?? NaN) / 1e6).toFixed(2)}M`,
                fixed((p.bytesBetweenSteps ?? NaN) / MiB),
                fixed((p.peakBytes ?? NaN) / MiB),
                fixed((p.peakRssBytes ?? NaN) / MiB),
                p.stepMs === undefined ? `${fixed(p.profiledStepMs)}*` : fixed(p.stepMs),
                fixed(p.stepCpuMs),
                p.estimate ? fixed(p.estimate.totalBytes / MiB) : 'n/a',
                percent(p.estimateError, true),
              ]
            : [p.model, p.method, p.checkpointing ? 'yes' : 'no', p.note ?? 'not available', '', '', '', '', '', '', ''],
        ),
      ),
    );
    const ratios: string[][] = [];
    // Like against like, then each method with its default: QLoRA turns checkpointing on by
    // default (as PEFT's prepare_model_for_kbit_training does), LoRA leaves it off.
    const pairings = [
      { lora: false, qlora: false, label: 'no / no' },
      { lora: true, qlora: true, label: 'yes / yes' },
      { lora: false, qlora: true, label: 'no / yes (defaults)' },
    ];
    for (const model of plan.models) {
      for (const pairing of pairings) {
        const find = (method: Method, checkpointing: boolean) => peaks.find((p) => p.model === model.name && p.method === method && p.checkpointing === checkpointing && p.available);
        const lora = find('lora', pairing.lora);
        const qlora = find('qlora', pairing.qlora);
        const full = find('full', pairing.qlora);
        ratios.push([
          model.name,
          pairing.label,
          percent(qlora && lora ? qlora.peakBytes! / lora.peakBytes! : undefined),
          percent(qlora && lora ? qlora.peakRssBytes! / lora.peakRssBytes! : undefined),
          percent(qlora && full ? qlora.peakBytes! / full.peakBytes! : undefined),
          fixed(qlora && lora ? qlora.stepMs! / lora.stepMs! : undefined, 2),
          fixed(qlora && lora ? qlora.stepCpuMs! / lora.stepCpuMs! : undefined, 2),
        ]);
      }
    }
    if (peaks.some((p) => p.available && p.stepMs === undefined)) sections.push('* the profiled step (tf.profile times every kernel); no step was timed without it.');
    sections.push('\nQLoRA against LoRA (float32 base) and full fine-tuning (full with the QLoRA row\'s checkpointing)', table(['model', 'ckpt LoRA / QLoRA', 'QLoRA/LoRA peak', 'QLoRA/LoRA RSS', 'QLoRA/full peak', 'QLoRA/LoRA step', 'QLoRA/LoRA CPU'], ratios));
  }
  if (validation.length) {
    const rows = validation.map((v) =>
      v.available
        ? [v.method, `${v.trainExamples} / ${v.validationExamples}`, fixed(v.valLossBefore, 4), fixed(v.finalTrainLoss, 4), fixed(v.valLossAfter, 4), fixed(v.stepMs)]
        : [v.method, v.note ?? 'not available', '', '', '', ''],
    );
    const lora = validation.find((v) => v.method === 'lora' && v.available);
    const qlora = validation.find((v) => v.method === 'qlora' && v.available);
    const difference = lora && qlora ? qlora.valLossAfter! / lora.valLossAfter! - 1 : undefined;
    sections.push(
      `\nValidation loss on the demo model after ${VALIDATION.steps} steps (batch ${VALIDATION.batchSize}, max ${VALIDATION.maxSeqLength} tokens, lr ${VALIDATION.learningRate} cosine, seed ${VALIDATION.seed})`,
      table(['method', 'train / val examples', 'val loss before', 'last train loss', 'val loss after', 'step ms'], rows),
      `QLoRA against LoRA: ${percent(difference, true)}${lora?.modelSha256 ? ` (model.safetensors sha256 ${lora.modelSha256.slice(0, 12)})` : ''}`,
    );
  }
  return sections.join('\n');
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

main().catch((error) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
