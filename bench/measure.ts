/**
 * Measurements of one scenario on the active tfjs backend: step time and its split, peak
 * memory, tensor-count drift, and a per-kernel profile of one step.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { trackLiveBytes } from './live-bytes';
import { GradientCheckpointing } from '../src/engine/models/checkpointing';
import { estimateTraining, type TrainingEstimate } from '../src/engine/estimate';
import { applyLora, loraVariables } from '../src/engine/lora';
import { batchLoss, loadModel, type CausalLM } from '../src/engine/models';
import { inspectModel } from '../src/engine/models/inspect';
import { AdamW, clipGlobalNorm } from '../src/engine/train/optimizer';
import { Trainer, type Example } from '../src/engine/train/trainer';
import { DEFAULT_TRAIN_CONFIG, type TrainConfig } from '../src/shared/train-config';
import { loraStepFlops } from './flops';
import { attentionTargets, writeRandomModel, type Scenario } from './scenarios';

export interface KernelShare {
  kernel: string;
  ms: number;
  calls: number;
}

export interface ScenarioResult {
  name: string;
  available: boolean;
  /** Whether the step ran with gradient checkpointing (when it would not fit otherwise); the peer does the same. */
  gradient_checkpointing?: boolean;
  /** Why the scenario was skipped or failed. */
  note?: string;
  tokens_per_s?: number;
  step_ms?: number;
  /**
   * Process CPU time per step. The engine computes on one thread, so on a machine shared with
   * other work this stays close to the step time the machine would have unloaded.
   */
  step_cpu_ms?: number;
  forward_ms?: number;
  backward_ms?: number;
  optimizer_ms?: number;
  /** tf.memory().numBytes at its highest during a profiled step. */
  peak_bytes?: number;
  /** tf.profile's peakBytes: every tensor counted, a shared buffer once per tensor that shares it. */
  tensor_peak_bytes?: number;
  /** Process resident set size at its highest, sampled after each step. */
  peak_rss_bytes?: number;
  base_weight_bytes_per_param?: number;
  /**
   * The pre-run memory estimate (`estimateTraining(inspectModel(dir), config).memory.totalBytes`)
   * for the scenario's settings, as the app and CLI show it before a run.
   */
  estimate_bytes?: number;
  /** The estimate's parts: base weights, LoRA weights and gradients, AdamW moments, activations. */
  estimate_memory?: TrainingEstimate['memory'];
  /** estimate_bytes ÷ peak_bytes − 1: positive when the estimate is too high. */
  estimate_error?: number;
  /** Live tensors after `drift_steps` trainer steps minus before them; 0 when nothing leaks. */
  tensor_drift?: number;
  drift_steps?: number;
  step_flops?: number;
  achieved_flops_per_s?: number;
  /** The backend's 1024×1024 matmul FLOP/s around this scenario's timed steps. */
  matmul_flops_per_s?: number;
  /** achieved_flops_per_s ÷ matmul_flops_per_s. */
  mfu?: number;
  /**
   * Like `mfu`, but with the work the engine really runs: the recomputed attention scores and,
   * with checkpointing, every block's forward pass a second time.
   */
  hfu?: number;
  /** Time of one dataSync of the scalar loss, as the trainer does per micro-batch. */
  loss_sync_ms?: number;
  /** Kernel time per kernel name over one profiled step, largest first. */
  profile?: { wall_ms: number; kernel_ms: number; kernels: KernelShare[]; shapes: KernelShare[] };
  torch_tokens_per_s?: number;
  torch_step_ms?: number;
  ratio_vs_torch?: number;
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/** FLOP/s of one `[n, n] × [n, n]` matmul on the active backend (median of `repeats`). */
export function measureMatmulFlops(n = 1024, repeats = 8): number {
  const a = tf.randomUniform([n, n], -1, 1, 'float32', 1);
  const b = tf.randomUniform([n, n], -1, 1, 'float32', 2);
  const times: number[] = [];
  for (let i = 0; i < repeats + 2; i++) {
    const start = performance.now();
    const c = tf.matMul(a, b);
    c.dataSync();
    const elapsed = performance.now() - start;
    c.dispose();
    if (i >= 2) times.push(elapsed);
  }
  a.dispose();
  b.dispose();
  return (2 * n * n * n) / (median(times) / 1000);
}

/** Returns seeded random token rows with labels equal to the inputs (every position trains). */
export function randomExamples(count: number, seq: number, vocab: number, seed: number): Example[] {
  let state = seed >>> 0;
  const next = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state;
  };
  return Array.from({ length: count }, () => {
    const ids = Array.from({ length: seq }, () => next() % vocab);
    return { input_ids: ids, labels: [...ids] };
  });
}

function baseWeightBytesPerParameter(model: CausalLM): number {
  let bytes = 0;
  let parameters = 0;
  for (const layer of model.linearLayers()) {
    parameters += layer.inFeatures * layer.outFeatures;
    bytes += layer.kernel ? 4 * layer.kernel.size : layer.quantized!.bytes;
  }
  return bytes / parameters;
}

/**
 * Steps whose memory estimate exceeds this run with gradient checkpointing: the wasm heap ends at
 * 4 GiB, and the weights, the allocator's free gaps and the estimate's error need room below it.
 */
export const WASM_STEP_BUDGET_BYTES = 3.4 * 2 ** 30;

/** Builds the run settings of a scenario, as the trainer and the memory estimate receive them. */
export function scenarioConfig(scenario: Scenario, modelPath: string): TrainConfig {
  const lora = { ...DEFAULT_TRAIN_CONFIG.lora, r: scenario.rank, loraAlpha: 2 * scenario.rank, targetModules: attentionTargets(scenario.shape.family) };
  return {
    ...DEFAULT_TRAIN_CONFIG,
    modelPath,
    method: scenario.quantized ? 'qlora' : 'lora',
    quant: scenario.quantized ? { quantType: 'nf4', blocksize: 64, doubleQuant: true } : undefined,
    lora,
    batchSize: scenario.batch,
    // Every benchmark example is exactly `seq` tokens long.
    maxSeqLength: scenario.seq,
    maxSteps: 1_000_000,
    warmupSteps: 0,
    schedule: 'constant',
    learningRate: 2e-4,
  };
}

/** Runs one scenario end to end; `tmpRoot` receives the model folder, removed afterwards. */
export async function runScenario(scenario: Scenario, tmpRoot: string, log: (line: string) => void): Promise<ScenarioResult> {
  const dir = fs.mkdtempSync(path.join(tmpRoot, `${scenario.name}-`));
  let model: CausalLM | null = null;
  let trainer: Trainer | null = null;
  try {
    log(`${scenario.name}: writing a random ${scenario.shape.family} checkpoint`);
    writeRandomModel(dir, scenario.shape, 1234);
    const config = scenarioConfig(scenario, dir);
    // The estimate reads the folder's config.json and safetensors header, so it runs before the folder is removed.
    const info = inspectModel(dir);
    let estimate = estimateTraining(info, config).memory;
    if (tf.getBackend() === 'wasm' && estimate.totalBytes > WASM_STEP_BUDGET_BYTES) {
      log(`${scenario.name}: estimated ${(estimate.totalBytes / 2 ** 30).toFixed(2)} GiB exceeds the wasm heap budget; running with gradient checkpointing`);
      config.gradientCheckpointing = true;
      estimate = estimateTraining(info, config).memory;
    }
    model = loadModel(dir, { quantize: config.quant }).model;
    fs.rmSync(dir, { recursive: true, force: true });

    applyLora(model, config.lora, 42);
    const examples = randomExamples(4 * scenario.batch, scenario.seq, scenario.shape.vocab, 7);
    trainer = new Trainer({ model, train: examples, settings: config, padTokenId: 0 });
    const result = await measureTrainer(scenario, model, trainer, config.gradientCheckpointing, log);
    return { ...result, gradient_checkpointing: config.gradientCheckpointing, estimate_bytes: estimate.totalBytes, estimate_memory: estimate, estimate_error: estimate.totalBytes / result.peak_bytes! - 1 };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return { name: scenario.name, available: false, note: `failed: ${message.split('\n')[0]}` };
  } finally {
    trainer?.dispose();
    model?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function measureTrainer(scenario: Scenario, model: CausalLM, trainer: Trainer, checkpointing: boolean, log: (line: string) => void): Promise<ScenarioResult> {
  let peakRss = process.memoryUsage().rss;
  const sampleRss = () => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  };

  log(`${scenario.name}: warm-up step`);
  trainer.trainStep();
  sampleRss();

  // The reference matmul is measured just before and just after the timed steps and averaged,
  // so a change in the machine's load during the run affects both sides of the ratio alike.
  const matmulBefore = measureMatmulFlops();
  const tensorsBefore = tf.memory().numTensors;

  // Whole steps through the trainer: what a user's run does per update.
  const stepTimes: number[] = [];
  const stepCpuTimes: number[] = [];
  let tokens = 0;
  for (let i = 0; i < scenario.steps; i++) {
    const cpuStart = process.cpuUsage();
    const result = trainer.trainStep();
    const cpu = process.cpuUsage(cpuStart);
    stepCpuTimes.push((cpu.user + cpu.system) / 1000);
    stepTimes.push(result.timeMs);
    tokens = result.tokens;
    sampleRss();
    log(`${scenario.name}: step ${i + 1}/${scenario.steps} ${result.timeMs.toFixed(0)} ms`);
  }
  const stepMs = median(stepTimes);
  const matmulFlops = (matmulBefore + measureMatmulFlops()) / 2;

  // The split: forward alone, forward + backward, and the optimizer, on the same micro-batch.
  const batch = trainer.microBatch(0);
  const variables = loraVariables(model);
  let call = 0;
  const context = { training: true, nextSeed: () => call++ };
  const forwardTimes: number[] = [];
  const gradTimes: number[] = [];
  const optimizerTimes: number[] = [];
  const syncTimes: number[] = [];
  const optimizer = new AdamW({ beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0 });
  for (let i = 0; i < scenario.steps; i++) {
    let start = performance.now();
    const loss = tf.tidy(() => batchLoss(model, batch, { context }));
    const lossTensorReady = performance.now();
    loss.dataSync();
    forwardTimes.push(performance.now() - start);
    syncTimes.push(performance.now() - lossTensorReady);
    loss.dispose();

    // The same recomputation as the trainer's step when the scenario runs with checkpointing.
    const recompute = checkpointing ? new GradientCheckpointing(context) : null;
    start = performance.now();
    const { value, grads } = tf.variableGrads(() => batchLoss(model, batch, recompute ? { context: recompute.context, recomputeBlock: recompute.recomputeBlock } : { context }), variables);
    value.dataSync();
    gradTimes.push(performance.now() - start);
    value.dispose();
    recompute?.dispose();

    start = performance.now();
    const gradients = new Map(Object.entries(grads));
    clipGlobalNorm(gradients, 1);
    optimizer.apply(variables, gradients, 2e-4);
    optimizerTimes.push(performance.now() - start);
    for (const gradient of gradients.values()) gradient.dispose();
    sampleRss();
  }
  optimizer.dispose();
  const forwardMs = median(forwardTimes);
  const backwardMs = Math.max(0, median(gradTimes) - forwardMs);

  log(`${scenario.name}: profiled step`);
  const liveBytes = trackLiveBytes();
  const profileStart = performance.now();
  const info = await tf.profile(() => {
    trainer.trainStep();
  });
  const profileWall = performance.now() - profileStart;
  // Buffers really held at the highest point (wasm); tfjs's own figure counts shared buffers once
  // per tensor.
  const peakBytes = liveBytes?.peak() ?? info.peakBytes;
  liveBytes?.stop();
  sampleRss();
  // Composite ops (custom gradients, `logSoftmax__op`) are recorded around the kernels they run,
  // so only registered kernels count toward the total.
  const backendName = tf.getBackend();
  const byKernel = new Map<string, KernelShare>();
  const byShape = new Map<string, KernelShare>();
  let kernelMs = 0;
  for (const kernel of info.kernels) {
    if (!tf.getKernel(kernel.name, backendName)) continue;
    const ms = typeof kernel.kernelTimeMs === 'number' ? kernel.kernelTimeMs : 0;
    const entry = byKernel.get(kernel.name) ?? { kernel: kernel.name, ms: 0, calls: 0 };
    entry.ms += ms;
    entry.calls += 1;
    kernelMs += ms;
    byKernel.set(kernel.name, entry);
    const shapeKey = `${kernel.name} ${kernel.inputShapes.map((shape) => `[${shape}]`).join(' ')}`;
    const shaped = byShape.get(shapeKey) ?? { kernel: shapeKey, ms: 0, calls: 0 };
    shaped.ms += ms;
    shaped.calls += 1;
    byShape.set(shapeKey, shaped);
  }
  const kernels = [...byKernel.values()].sort((a, b) => b.ms - a.ms);
  const shapes = [...byShape.values()].sort((a, b) => b.ms - a.ms).slice(0, 25);

  // The split above runs outside the trainer and frees what it creates, so the live tensor
  // count after every trainer step since the warm-up must equal the count before them.
  if (scenario.driftSteps > 0) {
    log(`${scenario.name}: ${scenario.driftSteps} more steps for the tensor count`);
    for (let i = 0; i < scenario.driftSteps; i++) trainer.trainStep();
    sampleRss();
  }
  const drift = tf.memory().numTensors - tensorsBefore;

  const counted = loraStepFlops(scenario.shape, scenario.batch, scenario.seq, scenario.rank);
  const flops = counted.total;
  const achieved = flops / (stepMs / 1000);
  const executed = (flops + counted.scoreRecompute + (checkpointing ? counted.blocksForward : 0)) / (stepMs / 1000);
  return {
    name: scenario.name,
    available: true,
    tokens_per_s: tokens / (stepMs / 1000),
    step_ms: stepMs,
    step_cpu_ms: median(stepCpuTimes),
    forward_ms: forwardMs,
    backward_ms: backwardMs,
    optimizer_ms: median(optimizerTimes),
    peak_bytes: peakBytes,
    tensor_peak_bytes: info.peakBytes,
    peak_rss_bytes: peakRss,
    base_weight_bytes_per_param: baseWeightBytesPerParameter(model),
    tensor_drift: drift,
    drift_steps: scenario.steps + 1 + scenario.driftSteps,
    step_flops: flops,
    achieved_flops_per_s: achieved,
    matmul_flops_per_s: matmulFlops,
    mfu: achieved / matmulFlops,
    hfu: executed / matmulFlops,
    loss_sync_ms: median(syncTimes),
    profile: { wall_ms: profileWall, kernel_ms: kernelMs, kernels, shapes },
  };
}

export function defaultTmpRoot(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'lora-studio-bench-'));
}
