/**
 * The training loop: batches, AdamW on LoRA variables only, schedule, accumulation, clipping,
 * validation, checkpoints and resume.
 *
 * Determinism: epoch e visits examples in the order `shuffle(seed, e)`, step s consumes
 * micro-batches s·accum … s·accum + accum − 1 of that endless sequence, and dropout seeds derive
 * from (seed, step, micro-batch, call). So the step number is the whole data position and RNG
 * state, and a resumed run repeats the uninterrupted one exactly.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../../shared/errors';
import type { TrainConfig } from '../../shared/train-config';
import { adapterTensors, writeAdapterFiles } from '../lora/adapter';
import { loraVariables } from '../lora';
import { batchLoss, type Batch } from '../models';
import { attentionChunkSize } from '../models/attention';
import { GradientCheckpointing } from '../models/checkpointing';
import { IGNORE_INDEX } from '../models/loss';
import { readSafetensorsHeader, readTensorAsFloat32, writeSafetensors, type TensorToWrite } from '../models/safetensors';
import type { CausalLM } from '../models/transformer';
import { AdamW, clipGlobalNorm } from './optimizer';
import { deriveSeed, SeededRandom } from './random';
import { learningRateAt } from './schedule';

export interface Example {
  input_ids: number[];
  labels: number[];
}

export type TrainerSettings = Pick<
  TrainConfig,
  | 'learningRate'
  | 'weightDecay'
  | 'adamBeta1'
  | 'adamBeta2'
  | 'adamEpsilon'
  | 'schedule'
  | 'warmupSteps'
  | 'maxSteps'
  | 'epochs'
  | 'batchSize'
  | 'gradientAccumulationSteps'
  | 'maxGradNorm'
  | 'evalSteps'
  | 'saveSteps'
  | 'seed'
  | 'lora'
  | 'gradientCheckpointing'
  | 'maxAttentionBytes'
>;

export interface StepResult {
  step: number;
  epoch: number;
  loss: number;
  learningRate: number;
  gradNorm: number;
  tokens: number;
  timeMs: number;
}

export interface TrainerState {
  step: number;
  bestValLoss: number | null;
  lastLoss: number | null;
  totalSteps: number;
}

export interface TrainerOptions {
  model: CausalLM;
  train: Example[];
  validation?: Example[];
  settings: TrainerSettings;
  padTokenId: number;
  /** Recorded in checkpoints' adapter_config.json. */
  baseModel?: string | null;
}

export class Trainer {
  readonly model: CausalLM;
  readonly settings: TrainerSettings;
  readonly train: Example[];
  readonly validation: Example[];
  readonly totalSteps: number;
  readonly microBatchesPerEpoch: number;
  step = 0;
  bestValLoss: number | null = null;
  lastLoss: number | null = null;
  private readonly optimizer: AdamW;
  private readonly padTokenId: number;
  private readonly baseModel: string | null;
  private readonly epochOrders = new Map<number, number[]>();
  /** Updates applied by this trainer; 0 means the weights are still the ones loaded. */
  private updatesApplied = 0;

  constructor(options: TrainerOptions) {
    const { settings } = options;
    validateTrainerSettings(settings);
    if (options.train.length === 0) {
      throw new StudioError('DATASET_EMPTY', 'The training set has no examples.', 'Import a dataset with at least one valid row.');
    }
    this.model = options.model;
    this.settings = settings;
    this.train = options.train;
    this.validation = options.validation ?? [];
    this.padTokenId = options.padTokenId;
    this.baseModel = options.baseModel ?? null;
    this.optimizer = new AdamW({ beta1: settings.adamBeta1, beta2: settings.adamBeta2, epsilon: settings.adamEpsilon, weightDecay: settings.weightDecay });
    this.microBatchesPerEpoch = Math.ceil(this.train.length / settings.batchSize);
    const stepsPerEpoch = Math.max(1, Math.ceil(this.microBatchesPerEpoch / settings.gradientAccumulationSteps));
    this.totalSteps = settings.maxSteps > 0 ? settings.maxSteps : Math.max(1, Math.round(settings.epochs * stepsPerEpoch));
    if (loraVariables(this.model).length === 0) {
      throw new StudioError('INVALID_ARGUMENT', 'The model has no LoRA layers to train.', 'Apply LoRA (target_modules) or load an adapter before training.');
    }
  }

  /** Returns the fractional epoch reached after `step` updates. */
  epochAt(step: number): number {
    return (step * this.settings.gradientAccumulationSteps) / this.microBatchesPerEpoch;
  }

  learningRate(step = this.step): number {
    const s = this.settings;
    return learningRateAt(step, s.learningRate, s.schedule, s.warmupSteps, this.totalSteps);
  }

  /** Runs one optimizer update over `gradientAccumulationSteps` micro-batches. */
  trainStep(): StepResult {
    const started = performance.now();
    const variables = loraVariables(this.model);
    const accumulation = this.settings.gradientAccumulationSteps;
    const learningRate = this.learningRate();
    let lossSum = 0;
    let tokens = 0;
    let summed: Map<string, tf.Tensor> | null = null;

    for (let micro = 0; micro < accumulation; micro++) {
      const batch = this.microBatch(this.step * accumulation + micro);
      tokens += batch.tokens;
      let call = 0;
      const context = { training: true, nextSeed: () => deriveSeed(this.settings.seed, this.step, micro, call++) };
      const checkpointing = this.settings.gradientCheckpointing ? new GradientCheckpointing(context) : null;
      const options = {
        context: checkpointing ? checkpointing.context : context,
        recomputeBlock: checkpointing?.recomputeBlock,
        attentionChunkSize: this.attentionChunk(batch),
      };
      let computed: { value: tf.Scalar; grads: tf.NamedTensorMap };
      try {
        computed = tf.variableGrads(() => tf.div(batchLoss(this.model, batch, options), accumulation) as tf.Scalar, variables);
      } finally {
        checkpointing?.dispose();
      }
      const { value, grads } = computed;
      lossSum += value.dataSync()[0];
      value.dispose();
      summed = accumulate(summed, grads);
    }

    const loss = lossSum;
    if (!Number.isFinite(loss)) {
      disposeAll(summed!);
      if (this.updatesApplied === 0) throw this.brokenStartError(loss);
      throw new StudioError(
        'NAN_LOSS',
        `The loss became ${loss} at step ${this.step + 1} (learning rate ${learningRate.toExponential(3)}).`,
        'Lower the learning rate, enable gradient clipping (max grad norm 1.0), or check the data for empty examples. The last good checkpoint is kept.',
      );
    }
    const gradNorm = clipGlobalNorm(summed!, this.settings.maxGradNorm);
    this.optimizer.apply(variables, summed!, learningRate);
    disposeAll(summed!);

    this.step += 1;
    this.updatesApplied += 1;
    this.lastLoss = loss;
    return { step: this.step, epoch: this.epochAt(this.step), loss, learningRate, gradNorm, tokens, timeMs: performance.now() - started };
  }

  /**
   * Builds the error for a non-finite loss before any update. Such a loss comes from the loaded
   * weights or the data, not from the learning rate, so the error names the first weight that
   * contains NaN or infinity when there is one.
   */
  private brokenStartError(loss: number): StudioError {
    const broken = firstNonFiniteWeight(this.model);
    const where = broken ? ` ${broken} contains NaN or infinite values.` : '';
    return new StudioError(
      'NAN_LOSS',
      `The loss is ${loss} at step ${this.step + 1}, before any update, so the learning rate is not the cause.${where}`,
      broken
        ? 'The model weights are broken: re-download or re-convert the model, then start the run again.'
        : 'Check that the model weights are finite (re-download the model or the adapter it continues from) and that the data contains valid examples.',
    );
  }

  /** Query chunk for attention under `maxAttentionBytes`, or undefined for one piece. */
  private attentionChunk(batch: Batch): number | undefined {
    if (!this.settings.maxAttentionBytes) return undefined;
    return attentionChunkSize({
      maxAttentionBytes: this.settings.maxAttentionBytes,
      batch: batch.inputIds.length,
      heads: this.model.config.numHeads,
      keyLength: batch.inputIds[0].length,
    });
  }

  /** Token-weighted mean loss over the validation set (no dropout). */
  evaluate(examples: Example[] = this.validation): number | null {
    if (examples.length === 0) return null;
    let weighted = 0;
    let count = 0;
    for (let start = 0; start < examples.length; start += this.settings.batchSize) {
      const batch = collate(examples.slice(start, start + this.settings.batchSize), this.padTokenId);
      const targets = countTargets(batch.labels);
      if (targets === 0) continue;
      const loss = tf.tidy(() => batchLoss(this.model, batch, { attentionChunkSize: this.attentionChunk(batch) }));
      weighted += loss.dataSync()[0] * targets;
      count += targets;
      loss.dispose();
    }
    if (count === 0) return null;
    const value = weighted / count;
    if (this.bestValLoss === null || value < this.bestValLoss) this.bestValLoss = value;
    return value;
  }

  /** Returns the padded micro-batch at a global index of the endless shuffled sequence. */
  microBatch(globalIndex: number): Batch & { tokens: number } {
    const epoch = Math.floor(globalIndex / this.microBatchesPerEpoch);
    const within = globalIndex % this.microBatchesPerEpoch;
    const order = this.epochOrder(epoch);
    const indices = order.slice(within * this.settings.batchSize, (within + 1) * this.settings.batchSize);
    const batch = collate(indices.map((i) => this.train[i]), this.padTokenId);
    return { ...batch, tokens: batch.attentionMask!.flat().reduce((a, b) => a + b, 0) };
  }

  private epochOrder(epoch: number): number[] {
    let order = this.epochOrders.get(epoch);
    if (!order) {
      const indices = this.train.map((_, i) => i);
      order = new SeededRandom(deriveSeed(this.settings.seed, epoch, 0x5eed)).shuffle(indices);
      this.epochOrders.clear();
      this.epochOrders.set(epoch, order);
    }
    return order;
  }

  /**
   * Writes a checkpoint folder: a PEFT adapter (so any checkpoint loads in PEFT), the optimizer
   * moments and `trainer_state.json`. Written under a temporary name and renamed when complete.
   */
  saveCheckpoint(dir: string, extra: Record<string, unknown> = {}): string {
    const temporary = `${dir}.tmp-${process.pid}`;
    fs.rmSync(temporary, { recursive: true, force: true });
    fs.mkdirSync(temporary, { recursive: true });
    writeAdapterFiles(this.model, this.settings.lora, temporary, this.baseModel);

    const { firstMoments, secondMoments } = this.optimizer.state();
    const moments: Record<string, TensorToWrite> = {};
    const names = loraVariableNames(this.model);
    for (const [variableName, key] of names) {
      const m = firstMoments.get(variableName);
      const v = secondMoments.get(variableName);
      if (m) moments[`${key}.exp_avg`] = { dtype: 'F32', shape: m.shape, data: m.dataSync() as Float32Array };
      if (v) moments[`${key}.exp_avg_sq`] = { dtype: 'F32', shape: v.shape, data: v.dataSync() as Float32Array };
    }
    writeSafetensors(path.join(temporary, 'optimizer.safetensors'), moments);
    const state: TrainerState & Record<string, unknown> = {
      ...extra,
      step: this.step,
      bestValLoss: this.bestValLoss,
      lastLoss: this.lastLoss,
      totalSteps: this.totalSteps,
      optimizerStep: this.optimizer.step,
      seed: this.settings.seed,
      dataPosition: this.step * this.settings.gradientAccumulationSteps,
    };
    fs.writeFileSync(path.join(temporary, 'trainer_state.json'), JSON.stringify(state, null, 2) + '\n');
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(temporary, dir);
    return dir;
  }

  /** Restores LoRA weights, optimizer moments and the step from a checkpoint folder. */
  loadCheckpoint(dir: string): TrainerState {
    const stateFile = path.join(dir, 'trainer_state.json');
    if (!fs.existsSync(stateFile)) {
      throw new StudioError('NOT_FOUND', `Checkpoint ${dir} has no trainer_state.json.`, 'Resume from a complete checkpoint folder (checkpoints/step-N).');
    }
    const state = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
    const adapter = readSafetensorsHeader(path.join(dir, 'adapter_model.safetensors'));
    const optimizer = readSafetensorsHeader(path.join(dir, 'optimizer.safetensors'));
    const firstMoments = new Map<string, tf.Tensor>();
    const secondMoments = new Map<string, tf.Tensor>();
    const adapterKeys = new Map(Object.keys(adapterTensorsShape(this.model)).map((k) => [k, true]));
    for (const [variableName, key] of loraVariableNames(this.model)) {
      if (!adapterKeys.has(key) || !adapter.tensors.has(key)) {
        throw new StudioError('ADAPTER_MISMATCH', `Checkpoint ${dir} has no tensor ${key}.`, 'The checkpoint belongs to a run with other LoRA settings.');
      }
      const variable = findVariable(this.model, variableName);
      variable.assign(tf.tensor(readTensorAsFloat32(adapter, key), variable.shape));
      if (optimizer.tensors.has(`${key}.exp_avg`)) {
        firstMoments.set(variableName, tf.tensor(readTensorAsFloat32(optimizer, `${key}.exp_avg`), variable.shape));
        secondMoments.set(variableName, tf.tensor(readTensorAsFloat32(optimizer, `${key}.exp_avg_sq`), variable.shape));
      }
    }
    this.optimizer.restore(state.optimizerStep ?? state.step, firstMoments, secondMoments);
    disposeAll(firstMoments);
    disposeAll(secondMoments);
    this.step = state.step;
    this.bestValLoss = state.bestValLoss ?? null;
    this.lastLoss = state.lastLoss ?? null;
    return state;
  }

  dispose(): void {
    this.optimizer.dispose();
  }
}

/** Pads examples on the right with `padTokenId`; padded labels are -100 and the mask 0. */
export function collate(examples: Example[], padTokenId: number): Batch {
  const length = Math.max(...examples.map((e) => e.input_ids.length));
  const inputIds: number[][] = [];
  const labels: number[][] = [];
  const attentionMask: number[][] = [];
  for (const example of examples) {
    const padding = length - example.input_ids.length;
    inputIds.push([...example.input_ids, ...new Array(padding).fill(padTokenId)]);
    labels.push([...example.labels, ...new Array(padding).fill(IGNORE_INDEX)]);
    attentionMask.push([...new Array(example.input_ids.length).fill(1), ...new Array(padding).fill(0)]);
  }
  return { inputIds, labels, attentionMask };
}

function countTargets(labels: number[][]): number {
  let count = 0;
  for (const row of labels) for (let t = 1; t < row.length; t++) if (row[t] !== IGNORE_INDEX) count++;
  return count;
}

function accumulate(summed: Map<string, tf.Tensor> | null, grads: tf.NamedTensorMap): Map<string, tf.Tensor> {
  if (!summed) return new Map(Object.entries(grads));
  for (const [name, gradient] of Object.entries(grads)) {
    const previous = summed.get(name)!;
    summed.set(name, tf.add(previous, gradient));
    previous.dispose();
    gradient.dispose();
  }
  return summed;
}

function disposeAll(tensors: Map<string, tf.Tensor>): void {
  for (const tensor of tensors.values()) tensor.dispose();
}

/** Variable name → PEFT key, for every LoRA tensor. */
function loraVariableNames(model: CausalLM): [string, string][] {
  return model
    .linearLayers()
    .filter((layer) => layer.lora)
    .flatMap((layer) => [
      [layer.lora!.loraA.name, `base_model.model.${layer.name}.lora_A.weight`] as [string, string],
      [layer.lora!.loraB.name, `base_model.model.${layer.name}.lora_B.weight`] as [string, string],
    ]);
}

function adapterTensorsShape(model: CausalLM): Record<string, unknown> {
  return Object.fromEntries(loraVariableNames(model).map(([, key]) => [key, true]));
}

function findVariable(model: CausalLM, name: string): tf.Variable {
  const variable = loraVariables(model).find((v) => v.name === name);
  if (!variable) throw new Error(`LoRA variable ${name} not found`);
  return variable;
}

export function validateTrainerSettings(s: TrainerSettings): void {
  const positiveInteger = (value: number, name: string, hint: string) => {
    if (!Number.isInteger(value) || value < 1) throw new StudioError('INVALID_ARGUMENT', `${name} must be a positive integer. Received: ${name}=${value}.`, hint);
  };
  positiveInteger(s.batchSize, 'batch_size', 'Use 1 to 64; lower it if memory runs out.');
  positiveInteger(s.gradientAccumulationSteps, 'gradient_accumulation_steps', 'Use 1 unless the batch does not fit in memory.');
  if (!(s.learningRate > 0) || !Number.isFinite(s.learningRate)) {
    throw new StudioError('INVALID_ARGUMENT', `learning_rate must be a positive number. Received: learning_rate=${s.learningRate}.`, 'LoRA typically uses 1e-4 to 3e-4.');
  }
  if (!(s.maxSteps >= 0) || !Number.isInteger(s.maxSteps)) {
    throw new StudioError('INVALID_ARGUMENT', `max_steps must be a non-negative integer. Received: max_steps=${s.maxSteps}.`, 'Use 0 to train for a number of epochs instead.');
  }
  if (s.maxSteps === 0 && !(s.epochs > 0)) {
    throw new StudioError('INVALID_ARGUMENT', `epochs must be positive when max_steps is 0. Received: epochs=${s.epochs}.`, 'Set epochs (e.g. 1) or max_steps.');
  }
  if (!(s.weightDecay >= 0)) throw new StudioError('INVALID_ARGUMENT', `weight_decay must be ≥ 0. Received: weight_decay=${s.weightDecay}.`, 'Use 0 to 0.1.');
  if (!(s.maxGradNorm >= 0)) throw new StudioError('INVALID_ARGUMENT', `max_grad_norm must be ≥ 0. Received: max_grad_norm=${s.maxGradNorm}.`, 'Use 1.0, or 0 to turn clipping off.');
  if (!(s.warmupSteps >= 0)) throw new StudioError('INVALID_ARGUMENT', `warmup_steps must be ≥ 0. Received: warmup_steps=${s.warmupSteps}.`, 'Use 0 to 10% of the steps.');
  if (!(s.adamBeta1 >= 0 && s.adamBeta1 < 1) || !(s.adamBeta2 >= 0 && s.adamBeta2 < 1)) {
    throw new StudioError('INVALID_ARGUMENT', `Adam betas must be in [0, 1). Received: beta1=${s.adamBeta1}, beta2=${s.adamBeta2}.`, 'The defaults are 0.9 and 0.999.');
  }
}

export { adapterTensors };

/** Name of the first weight (embeddings, then linear layers in model order) with a NaN or infinite value. */
function firstNonFiniteWeight(model: CausalLM): string | undefined {
  const candidates: [string, tf.Tensor | null][] = [
    ['embed_tokens', model.embedTokens],
    ['position embeddings', model.positionEmbeddings],
  ];
  for (const layer of model.linearLayers()) {
    candidates.push([`${layer.name}.weight`, layer.kernel], [`${layer.name}.bias`, layer.bias]);
    if (layer.lora) candidates.push([`${layer.name}.lora_A`, layer.lora.loraA], [`${layer.name}.lora_B`, layer.lora.loraB]);
  }
  for (const [name, tensor] of candidates) {
    if (!tensor || tensor.isDisposed) continue;
    const bad = tf.tidy(() => tf.any(tf.logicalNot(tf.isFinite(tensor))));
    const found = bad.dataSync()[0] !== 0;
    bad.dispose();
    if (found) return name;
  }
  return undefined;
}
