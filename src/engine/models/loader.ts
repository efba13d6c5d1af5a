/**
 * Reads a Hugging Face model folder: `config.json`, `generation_config.json` and the weights from
 * `model.safetensors` or the shards listed in `model.safetensors.index.json`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { StudioError } from '../../shared/errors';
import { parseModelConfig, type ModelConfig } from './config';
import { readSafetensorsHeader, readTensorAsFloat32, type SafetensorsHeader } from './safetensors';

export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

export interface ModelFiles {
  dir: string;
  configPath: string;
  /** The safetensors files holding the weights, in shard order. */
  weightFiles: string[];
  /** Tensor name → file, from the index (sharded) or the single file's header. */
  tensorFiles: Map<string, string>;
}

/** Reads and parses `<dir>/config.json`. */
export function readModelConfig(dir: string): ModelConfig {
  const configPath = path.join(dir, 'config.json');
  const raw = readJson(configPath, 'MODEL_FILES_MISSING', 'Pick the folder that contains config.json and the weights (a Hugging Face model folder).');
  return parseModelConfig(raw as Record<string, unknown>, configPath);
}

/** Reads `generation_config.json` if present. */
export function readGenerationConfig(dir: string): Record<string, unknown> | undefined {
  const file = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(file)) return undefined;
  return readJson(file, 'MODEL_FORMAT', 'Fix or delete generation_config.json.') as Record<string, unknown>;
}

/** Finds the weight files of a model folder and checks every shard exists. */
export function locateModelFiles(dir: string): ModelFiles {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw new StudioError('MODEL_FILES_MISSING', `Model folder ${dir} does not exist or is not a folder.`, 'Pick a Hugging Face model folder.');
  }
  const configPath = path.join(dir, 'config.json');
  if (!fs.existsSync(configPath)) {
    throw new StudioError('MODEL_FILES_MISSING', `${dir} has no config.json.`, 'Pick the folder that contains config.json and the weights (a Hugging Face model folder).');
  }

  const single = path.join(dir, 'model.safetensors');
  const index = path.join(dir, 'model.safetensors.index.json');
  if (fs.existsSync(index)) return locateShards(dir, configPath, index);
  if (fs.existsSync(single)) {
    const header = readSafetensorsHeader(single);
    const tensorFiles = new Map([...header.tensors.keys()].map((name) => [name, single]));
    return { dir, configPath, weightFiles: [single], tensorFiles };
  }

  const pickles = fs.readdirSync(dir).filter((f) => /^pytorch_model.*\.bin$|\.pt$|\.pth$/.test(f));
  if (pickles.length) {
    throw new StudioError(
      'MODEL_FORMAT',
      `${dir} has only PyTorch pickle weights (${pickles.join(', ')}); pickle files are not loaded because unpickling runs arbitrary code.`,
      'Convert to safetensors in Python: AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True), or download the model.safetensors version from the Hub.',
    );
  }
  throw new StudioError('MODEL_FILES_MISSING', `${dir} has no model.safetensors or model.safetensors.index.json.`, 'Download the weights in safetensors format into this folder.');
}

function locateShards(dir: string, configPath: string, indexPath: string): ModelFiles {
  const index = readJson(indexPath, 'MODEL_FORMAT', 'Re-download model.safetensors.index.json.') as { weight_map?: Record<string, string> };
  if (!index.weight_map || typeof index.weight_map !== 'object') {
    throw new StudioError('MODEL_FORMAT', `${indexPath} has no "weight_map" object.`, 'Re-download model.safetensors.index.json.');
  }
  const tensorFiles = new Map<string, string>();
  const weightFiles: string[] = [];
  for (const [name, shard] of Object.entries(index.weight_map)) {
    const file = path.join(dir, shard);
    if (path.dirname(path.resolve(file)) !== path.resolve(dir)) {
      throw new StudioError('MODEL_FORMAT', `${indexPath}: shard name "${shard}" points outside the model folder.`, 'Shard names must be plain file names.');
    }
    if (!weightFiles.includes(file)) weightFiles.push(file);
    tensorFiles.set(name, file);
  }
  const missing = weightFiles.filter((f) => !fs.existsSync(f));
  if (missing.length) {
    throw new StudioError(
      'MODEL_FILES_MISSING',
      `${dir} is missing ${missing.length} of ${weightFiles.length} weight shards: ${missing.map((f) => path.basename(f)).join(', ')}.`,
      'Download every shard listed in model.safetensors.index.json into the folder.',
    );
  }
  return { dir, configPath, weightFiles, tensorFiles };
}

/**
 * Indexes every tensor of the model; `include` filters names (e.g. to skip tensors a model does
 * not use, like GPT-2's `attn.bias` buffers). Headers are read and checked now. A tensor's values
 * are read from disk as float32 each time its `data` is read. So loading keeps one tensor on the
 * host at a time instead of the whole checkpoint, and for QLoRA, which quantizes each weight as
 * it loads, the float32 model never exists in memory at all.
 */
export function readModelWeights(files: ModelFiles, include: (name: string) => boolean = () => true): Map<string, HostTensor> {
  const headers = new Map<string, SafetensorsHeader>();
  const weights = new Map<string, HostTensor>();
  for (const [name, file] of files.tensorFiles) {
    if (!include(name)) continue;
    let header = headers.get(file);
    if (!header) {
      header = readSafetensorsHeader(file);
      headers.set(file, header);
    }
    const info = header.tensors.get(name);
    if (!info) {
      throw new StudioError('MODEL_FORMAT', `${file} does not contain tensor "${name}" although the index lists it there.`, 'Re-download the shard and the index.');
    }
    const source = header;
    weights.set(name, {
      shape: info.shape,
      get data() {
        return readTensorAsFloat32(source, name);
      },
    });
  }
  return weights;
}

function readJson(file: string, missingCode: 'MODEL_FILES_MISSING' | 'MODEL_FORMAT', hint: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new StudioError(missingCode, `${file} was not found.`, hint);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new StudioError('MODEL_FORMAT', `${file} is not valid JSON: ${(error as Error).message}.`, hint);
  }
}
