/**
 * Adding LoRA adapters to a loaded model: choosing target modules as PEFT does, initializing
 * `lora_A`/`lora_B`, counting parameters, and merging the update into the base weights.
 */
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../../shared/errors';
import type { LoraSettings } from '../../shared/train-config';
import type { Linear } from '../models/linear';
import type { CausalLM } from '../models/transformer';
import { loraDeltaWeight, loraScaling, type LoraWeights } from './layer';

export { loraDelta, loraScaling, type LoraWeights } from './layer';

/**
 * Tests a module name against target_modules as PEFT does: it matches a target when it equals it
 * or ends with `.` + target. `all-linear` selects every linear layer except the output head.
 */
export function matchesTarget(moduleName: string, targets: string[] | 'all-linear'): boolean {
  if (targets === 'all-linear') return moduleName !== 'lm_head';
  return targets.some((target) => moduleName === target || moduleName.endsWith(`.${target}`));
}

/** Returns the transformer block index in a module path (`model.layers.3.…`, `transformer.h.3.…`). */
export function layerIndexOf(moduleName: string): number | undefined {
  const match = /\.(?:layers|h)\.(\d+)\./.exec(moduleName);
  return match ? Number(match[1]) : undefined;
}

/** Returns the linear layers that `settings` selects, in model order. */
export function selectTargets(model: CausalLM, settings: Pick<LoraSettings, 'targetModules' | 'layersToTransform'>): Linear[] {
  return model.linearLayers().filter((layer) => {
    if (!matchesTarget(layer.name, settings.targetModules)) return false;
    if (!settings.layersToTransform) return true;
    const index = layerIndexOf(layer.name);
    return index !== undefined && settings.layersToTransform.includes(index);
  });
}

/** Short module names a user can target (`q_proj`, `c_attn`, `attn.c_proj`…), in model order. */
export function targetableModuleNames(model: CausalLM): string[] {
  const names: string[] = [];
  for (const layer of model.linearLayers()) {
    if (layer.name === 'lm_head') continue;
    const parts = layer.name.split('.');
    const short = parts[parts.length - 1];
    // GPT-2 uses c_proj in both attention and MLP, so the parent module name is kept to tell them apart.
    const name = model.config.family === 'gpt2' && short === 'c_proj' ? `${parts[parts.length - 2]}.${short}` : short;
    if (!names.includes(name)) names.push(name);
  }
  return names;
}

/**
 * Adds fresh LoRA weights to every targeted layer. `lora_A` is Kaiming-uniform with a = √5
 * (bound 1/√in_features, as PEFT's default) or normal with std 1/r (`gaussian`); `lora_B` is zero,
 * so the adapted model starts equal to the base model.
 */
export function applyLora(model: CausalLM, settings: LoraSettings, seed: number): Linear[] {
  validateLoraSettings(settings);
  const targets = selectTargets(model, settings);
  if (targets.length === 0) {
    throw new StudioError(
      'INVALID_ARGUMENT',
      `target_modules ${JSON.stringify(settings.targetModules)} match no linear layer of this model.`,
      `Choose from: ${targetableModuleNames(model).join(', ')} (or all-linear).`,
    );
  }
  targets.forEach((layer, index) => {
    const r = settings.r;
    const loraA = tf.tidy(() =>
      settings.initLoraWeights === 'gaussian'
        ? tf.randomNormal([r, layer.inFeatures], 0, 1 / r, 'float32', seed + index)
        : tf.randomUniform([r, layer.inFeatures], -1 / Math.sqrt(layer.inFeatures), 1 / Math.sqrt(layer.inFeatures), 'float32', seed + index),
    );
    const loraB = tf.zeros([layer.outFeatures, r]);
    attachLora(layer, loraA as tf.Tensor2D, loraB as tf.Tensor2D, settings.loraAlpha, settings.useRslora, settings.loraDropout);
    loraA.dispose();
    loraB.dispose();
  });
  return targets;
}

/** Sets a layer's LoRA weights (copied into new trainable variables). */
export function attachLora(layer: Linear, loraA: tf.Tensor2D, loraB: tf.Tensor2D, loraAlpha: number, useRslora: boolean, dropout: number): void {
  const rank = loraA.shape[0];
  if (rank === 0) {
    throw new StudioError(
      'SHAPE_MISMATCH',
      `LoRA weights for ${layer.name} have rank 0 (lora_A [${loraA.shape}], lora_B [${loraB.shape}]); the scale alpha / r needs r of at least 1.`,
      'The adapter file contains no LoRA weights, so re-save it from the trained model.',
    );
  }
  if (typeof loraAlpha !== 'number' || !Number.isFinite(loraAlpha)) {
    throw new StudioError('ADAPTER_MISMATCH', `LoRA alpha for ${layer.name} must be a finite number, got ${loraAlpha}.`, 'Set lora_alpha to the value the adapter was trained with.');
  }
  if (loraA.shape[1] !== layer.inFeatures || loraB.shape[0] !== layer.outFeatures || loraB.shape[1] !== rank) {
    throw new StudioError(
      'SHAPE_MISMATCH',
      `LoRA weights for ${layer.name} have lora_A [${loraA.shape}] and lora_B [${loraB.shape}]; the layer needs lora_A [r, ${layer.inFeatures}] and lora_B [${layer.outFeatures}, r].`,
      'The adapter was trained for a different base model.',
    );
  }
  if (layer.lora) {
    layer.lora.loraA.dispose();
    layer.lora.loraB.dispose();
  }
  const safeName = layer.name.replace(/[^A-Za-z0-9_]/g, '_');
  layer.lora = {
    loraA: tf.variable(loraA, true, `${safeName}__lora_A_${variableCounter}`) as tf.Variable<tf.Rank.R2>,
    loraB: tf.variable(loraB, true, `${safeName}__lora_B_${variableCounter++}`) as tf.Variable<tf.Rank.R2>,
    rank,
    loraAlpha,
    scaling: loraScaling(loraAlpha, rank, useRslora),
    dropout,
  };
}

let variableCounter = 0;

/** Returns the trainable tensors, A then B for each adapted layer in model order. */
export function loraVariables(model: CausalLM): tf.Variable[] {
  return adaptedLayers(model).flatMap((layer) => [layer.lora!.loraA, layer.lora!.loraB]);
}

export function adaptedLayers(model: CausalLM): Linear[] {
  return model.linearLayers().filter((layer) => layer.lora !== null);
}

export interface ParameterCounts {
  trainable: number;
  total: number;
}

/** Trainable (LoRA) and total parameter counts, the numbers PEFT's print_trainable_parameters shows. */
export function countParameters(model: CausalLM): ParameterCounts {
  const trainable = loraVariables(model).reduce((sum, v) => sum + v.size, 0);
  return { trainable, total: model.parameterCount() + trainable };
}

/** Formats the counts as PEFT prints them: `trainable params: 7,168 || all params: 134,464 || trainable%: 5.3309`. */
export function formatTrainableParameters(counts: ParameterCounts): string {
  const percent = counts.total ? (100 * counts.trainable) / counts.total : 0;
  return `trainable params: ${counts.trainable.toLocaleString('en-US')} || all params: ${counts.total.toLocaleString('en-US')} || trainable%: ${percent.toFixed(4)}`;
}

/**
 * Folds every adapter into its base weight, `W ← W + scaling · B · A`, and removes the adapter.
 * The kernel is stored `[in, out]`, so the update is added transposed; GPT-2's Conv1D layout is
 * the kernel layout already.
 */
export function mergeLora(model: CausalLM): void {
  for (const layer of adaptedLayers(model)) {
    if (!layer.kernel) {
      throw new StudioError('INVALID_ARGUMENT', `${layer.name} has a quantized base weight; merge into a float32 copy of the model instead.`, 'Load the base model without quantization, load the adapter, then merge.');
    }
    const merged = tf.tidy(() => tf.add(layer.kernel!, tf.transpose(loraDeltaWeight(layer.lora!)))) as tf.Tensor2D;
    layer.kernel.dispose();
    layer.kernel = merged;
    layer.lora!.loraA.dispose();
    layer.lora!.loraB.dispose();
    layer.lora = null;
  }
}

/** Removes all adapters without merging. */
export function removeLora(model: CausalLM): void {
  for (const layer of adaptedLayers(model)) {
    layer.lora!.loraA.dispose();
    layer.lora!.loraB.dispose();
    layer.lora = null;
  }
}

export function validateLoraSettings(settings: LoraSettings): void {
  if (!Number.isInteger(settings.r) || settings.r < 1) {
    throw new StudioError('INVALID_ARGUMENT', `LoRA rank r must be a positive integer. Received: r=${settings.r}.`, 'Typical values are 4 to 64.');
  }
  if (!(settings.loraAlpha > 0)) {
    throw new StudioError('INVALID_ARGUMENT', `lora_alpha must be positive. Received: lora_alpha=${settings.loraAlpha}.`, 'A common choice is 2 × r.');
  }
  if (!(settings.loraDropout >= 0 && settings.loraDropout < 1)) {
    throw new StudioError('INVALID_ARGUMENT', `lora_dropout must be in [0, 1). Received: lora_dropout=${settings.loraDropout}.`, 'Use 0 to 0.1.');
  }
  if (settings.targetModules !== 'all-linear' && settings.targetModules.length === 0) {
    throw new StudioError('INVALID_ARGUMENT', 'target_modules is empty.', 'Name at least one module, e.g. q_proj,v_proj, or use all-linear.');
  }
}
