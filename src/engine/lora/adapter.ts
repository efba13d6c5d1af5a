/**
 * PEFT adapter folders: `adapter_config.json` plus `adapter_model.safetensors` with keys
 * `base_model.model.<module path>.lora_A.weight` `[r, in]` and `.lora_B.weight` `[out, r]`.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../../shared/errors';
import type { LoraSettings } from '../../shared/train-config';
import { readSafetensorsHeader, readTensorAsFloat32, writeSafetensors, type TensorToWrite } from '../models/safetensors';
import type { CausalLM } from '../models/transformer';
import { adaptedLayers, attachLora, layerIndexOf, matchesTarget, selectTargets } from './index';

export const ADAPTER_PREFIX = 'base_model.model.';

/** The subset of PEFT's LoraConfig this engine reads and writes. */
export interface PeftAdapterConfig {
  peft_type: 'LORA';
  task_type: 'CAUSAL_LM';
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[] | string;
  use_rslora: boolean;
  bias: 'none';
  fan_in_fan_out: boolean;
  base_model_name_or_path: string | null;
  layers_to_transform: number[] | null;
  init_lora_weights: boolean | string;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
  use_dora: boolean;
  modules_to_save: string[] | null;
  inference_mode: boolean;
  revision: string | null;
  [key: string]: unknown;
}

export interface LoadedAdapter {
  config: PeftAdapterConfig;
  settings: LoraSettings;
  modules: string[];
}

/** PEFT's LoraConfig default lora_alpha=8, used when adapter_config.json has no lora_alpha. */
const PEFT_DEFAULT_LORA_ALPHA = 8;

function checkAlpha(value: unknown, key: string, file: string): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new StudioError('MODEL_FORMAT', `${file}: "${key}" must be a positive number, got ${JSON.stringify(value)}.`, 'Set it to the alpha the adapter was trained with (PEFT defaults lora_alpha to 8).');
  }
}

/** Reads an adapter folder's config and checks the options this engine cannot honour. */
export function readAdapterConfig(dir: string): PeftAdapterConfig {
  const file = path.join(dir, 'adapter_config.json');
  if (!fs.existsSync(file)) {
    throw new StudioError('MODEL_FILES_MISSING', `${dir} has no adapter_config.json.`, 'Pick a PEFT adapter folder (saved with model.save_pretrained).');
  }
  let config: PeftAdapterConfig;
  try {
    config = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new StudioError('MODEL_FORMAT', `${file} is not valid JSON: ${(error as Error).message}.`, 'Re-save the adapter.');
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    const got = config === null ? 'null' : Array.isArray(config) ? 'an array' : typeof config;
    throw new StudioError('MODEL_FORMAT', `${file} must contain a JSON object, got ${got}.`, 'Re-save the adapter (model.save_pretrained).');
  }
  if (config.lora_alpha !== undefined && config.lora_alpha !== null) checkAlpha(config.lora_alpha, 'lora_alpha', file);
  for (const [pattern, alpha] of Object.entries(config.alpha_pattern ?? {})) checkAlpha(alpha, `alpha_pattern["${pattern}"]`, file);
  if (config.peft_type !== 'LORA') {
    throw new StudioError('MODEL_UNSUPPORTED', `${file}: peft_type "${config.peft_type}" is not supported.`, 'Only LoRA adapters (peft_type LORA) can be loaded.');
  }
  if (config.use_dora) {
    throw new StudioError('MODEL_UNSUPPORTED', `${file}: DoRA adapters (use_dora: true) are not supported.`, 'Train a plain LoRA adapter.');
  }
  if (config.bias && config.bias !== 'none') {
    throw new StudioError('MODEL_UNSUPPORTED', `${file}: bias "${config.bias}" is not supported.`, 'Only bias: "none" adapters can be loaded.');
  }
  if (config.modules_to_save && config.modules_to_save.length) {
    throw new StudioError('MODEL_UNSUPPORTED', `${file}: modules_to_save (${config.modules_to_save.join(', ')}) is not supported.`, 'Only adapters without fully trained extra modules can be loaded.');
  }
  return config;
}

/**
 * Loads a PEFT adapter onto `model`, replacing any adapters it has. Every tensor in the file must
 * map to a linear layer with matching shapes, and every layer the config targets must receive
 * its tensors: partial or non-matching adapters are errors, never a silent no-op.
 */
export function loadAdapter(model: CausalLM, dir: string): LoadedAdapter {
  const config = readAdapterConfig(dir);
  const weightsFile = path.join(dir, 'adapter_model.safetensors');
  if (!fs.existsSync(weightsFile)) {
    const hasBin = fs.existsSync(path.join(dir, 'adapter_model.bin'));
    throw new StudioError(
      'MODEL_FILES_MISSING',
      `${dir} has no adapter_model.safetensors${hasBin ? ' (only adapter_model.bin, a pickle file, which is not loaded because unpickling runs code)' : ''}.`,
      'Save the adapter with safe_serialization=True (the PEFT default).',
    );
  }
  const header = readSafetensorsHeader(weightsFile);
  const settings = settingsFromConfig(config);
  const layers = new Map(model.linearLayers().map((layer) => [layer.name, layer]));

  const pairs = new Map<string, { a?: string; b?: string }>();
  const unmatched: string[] = [];
  for (const key of header.tensors.keys()) {
    const match = /^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(key);
    if (!match || !layers.has(match[1])) {
      unmatched.push(key);
      continue;
    }
    const entry = pairs.get(match[1]) ?? {};
    if (match[2] === 'A') entry.a = key;
    else entry.b = key;
    pairs.set(match[1], entry);
  }
  if (unmatched.length) {
    throw new StudioError(
      'ADAPTER_MISMATCH',
      `${weightsFile}: ${unmatched.length} tensor(s) match no linear layer of the model: ${preview(unmatched)}.`,
      'The adapter was trained for a different base model; pick the model named in adapter_config.json (base_model_name_or_path).',
    );
  }
  const targeted = selectTargets(model, settings).map((layer) => layer.name);
  const missing = targeted.filter((name) => !pairs.get(name)?.a || !pairs.get(name)?.b);
  const extra = [...pairs.keys()].filter((name) => !targeted.includes(name));
  if (pairs.size === 0 || missing.length) {
    throw new StudioError(
      'ADAPTER_MISMATCH',
      `${weightsFile}: ${pairs.size === 0 ? 'no tensor matches the model' : `${missing.length} targeted layer(s) have no lora_A/lora_B tensors: ${preview(missing)}`}.`,
      'The adapter does not fit this model, or its file is incomplete.',
    );
  }
  if (extra.length) {
    throw new StudioError(
      'ADAPTER_MISMATCH',
      `${weightsFile}: tensors for ${preview(extra)} are not covered by target_modules ${JSON.stringify(config.target_modules)}.`,
      'adapter_config.json and adapter_model.safetensors disagree; re-save the adapter.',
    );
  }

  for (const [name, keys] of pairs) {
    const layer = layers.get(name)!;
    const a = header.tensors.get(keys.a!)!;
    const b = header.tensors.get(keys.b!)!;
    if (a.shape.length !== 2 || b.shape.length !== 2) {
      throw new StudioError('SHAPE_MISMATCH', `${weightsFile}: ${keys.a} and ${keys.b} must be 2-D, got [${a.shape}] and [${b.shape}].`);
    }
    const loraA = tf.tensor2d(readTensorAsFloat32(header, keys.a!), a.shape as [number, number]);
    const loraB = tf.tensor2d(readTensorAsFloat32(header, keys.b!), b.shape as [number, number]);
    try {
      const alpha = patternValue(config.alpha_pattern, name) ?? config.lora_alpha ?? PEFT_DEFAULT_LORA_ALPHA;
      attachLora(layer, loraA, loraB, alpha, config.use_rslora === true, config.lora_dropout ?? 0);
    } finally {
      loraA.dispose();
      loraB.dispose();
    }
  }
  return { config, settings, modules: [...pairs.keys()] };
}

/** LoraSettings equivalent to a PEFT config. */
export function settingsFromConfig(config: PeftAdapterConfig): LoraSettings {
  const targets = config.target_modules;
  let targetModules: string[] | 'all-linear';
  if (targets === 'all-linear') targetModules = 'all-linear';
  else if (Array.isArray(targets)) targetModules = targets;
  else {
    throw new StudioError('MODEL_UNSUPPORTED', `adapter_config.json: target_modules as a regular expression (${JSON.stringify(targets)}) is not supported.`, 'Use a list of module names.');
  }
  const layersToTransform = config.layers_to_transform;
  return {
    r: config.r,
    loraAlpha: config.lora_alpha ?? PEFT_DEFAULT_LORA_ALPHA,
    loraDropout: config.lora_dropout ?? 0,
    targetModules,
    layersToTransform: layersToTransform === null || layersToTransform === undefined ? undefined : Array.isArray(layersToTransform) ? layersToTransform : [layersToTransform],
    useRslora: config.use_rslora === true,
    initLoraWeights: config.init_lora_weights === 'gaussian' ? 'gaussian' : 'kaiming',
  };
}

function patternValue(pattern: Record<string, number> | undefined, moduleName: string): number | undefined {
  if (!pattern) return undefined;
  for (const [key, value] of Object.entries(pattern)) {
    if (matchesTarget(moduleName, [key])) return value;
  }
  return undefined;
}

/** Reads the adapter's tensors back from the model, under PEFT's key names. */
export function adapterTensors(model: CausalLM): Record<string, TensorToWrite> {
  const tensors: Record<string, TensorToWrite> = {};
  for (const layer of adaptedLayers(model)) {
    const { loraA, loraB } = layer.lora!;
    tensors[`${ADAPTER_PREFIX}${layer.name}.lora_A.weight`] = { dtype: 'F32', shape: loraA.shape, data: loraA.dataSync() as Float32Array };
    tensors[`${ADAPTER_PREFIX}${layer.name}.lora_B.weight`] = { dtype: 'F32', shape: loraB.shape, data: loraB.dataSync() as Float32Array };
  }
  return tensors;
}

/** PEFT's adapter_config.json for the adapters on `model`. */
export function adapterConfigFor(model: CausalLM, settings: LoraSettings, baseModel: string | null): PeftAdapterConfig {
  const layers = adaptedLayers(model);
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: 'none',
    fan_in_fan_out: model.config.family === 'gpt2',
    inference_mode: true,
    init_lora_weights: settings.initLoraWeights === 'gaussian' ? 'gaussian' : true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: settings.layersToTransform ?? null,
    loftq_config: {},
    lora_alpha: settings.loraAlpha,
    lora_dropout: settings.loraDropout,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: layers[0]?.lora?.rank ?? settings.r,
    rank_pattern: {},
    revision: null,
    target_modules: settings.targetModules === 'all-linear' ? 'all-linear' : settings.targetModules,
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: settings.useRslora,
  };
}

/** Writes the adapter folder (config + weights) into `dir`, which must exist. */
export function writeAdapterFiles(model: CausalLM, settings: LoraSettings, dir: string, baseModel: string | null): void {
  const config = adapterConfigFor(model, settings, baseModel);
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n');
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), adapterTensors(model), { format: 'pt' });
}

function preview(names: string[]): string {
  return names.length > 5 ? `${names.slice(0, 5).join(', ')} and ${names.length - 5} more` : names.join(', ');
}

export { layerIndexOf };
