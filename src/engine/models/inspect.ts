/**
 * A quick look at a model folder without loading its weights: what the model wizard shows
 * (architecture, size, vocabulary, context length, LoRA target names) and whether the engine
 * supports it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { StudioError } from '../../shared/errors';
import { SUPPORTED_ARCHITECTURES, parseModelConfig, type ModelConfig } from './config';
import { locateModelFiles } from './loader';
import { readSafetensorsHeader } from './safetensors';

export interface ModelInfo {
  path: string;
  name: string;
  architecture: string;
  modelType: string;
  supported: boolean;
  unsupportedReason?: string;
  parameterCount: number;
  /** Dtype of the stored weights (F32, F16, BF16), or a list when mixed. */
  dtype: string;
  sizeBytes: number;
  vocabSize: number;
  contextLength: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKeyValueHeads: number;
  intermediateSize: number;
  tieWordEmbeddings: boolean;
  /** Module names LoRA can target (`q_proj`, `v_proj`, … or GPT-2's `c_attn`, `attn.c_proj`, …). */
  linearModules: string[];
  /** The default LoRA targets for this family. */
  defaultTargets: string[];
  hasTokenizer: boolean;
  hasChatTemplate: boolean;
}

/** Reads config.json and the safetensors headers of `dir`. */
export function inspectModel(dir: string): ModelInfo {
  const absolute = path.resolve(dir);
  const configPath = path.join(absolute, 'config.json');
  if (!fs.existsSync(configPath)) {
    throw new StudioError('MODEL_FILES_MISSING', `${absolute} has no config.json.`, 'Pick the folder that contains config.json and the weights (a Hugging Face model folder).');
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  } catch (error) {
    throw new StudioError('MODEL_FORMAT', `${configPath} is not valid JSON: ${(error as Error).message}.`, 'Re-download config.json.');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new StudioError('MODEL_FORMAT', `${configPath} must contain a JSON object, got ${raw === null ? 'null' : Array.isArray(raw) ? 'an array' : typeof raw}.`, 'Re-download config.json.');
  }
  const singleWeights = path.join(absolute, 'model.safetensors');
  if (fs.existsSync(singleWeights) && !fs.statSync(singleWeights).isFile()) {
    throw new StudioError('MODEL_FORMAT', `${singleWeights} is a folder, not a safetensors file.`, 'Replace it with the weights file downloaded from the model repository.');
  }

  let config: ModelConfig | undefined;
  let unsupportedReason: string | undefined;
  try {
    config = parseModelConfig(raw, configPath);
  } catch (error) {
    if (!(error instanceof StudioError)) throw error;
    unsupportedReason = error.hint ? `${error.message} ${error.hint}` : error.message;
  }

  let parameterCount = 0;
  let sizeBytes = 0;
  const dtypes = new Set<string>();
  try {
    const files = locateModelFiles(absolute);
    for (const file of files.weightFiles) {
      sizeBytes += fs.statSync(file).size;
      for (const [name, info] of readSafetensorsHeader(file).tensors) {
        if (/\.attn\.(masked_)?bias$/.test(name)) continue;
        parameterCount += info.shape.reduce((a, b) => a * b, 1);
        dtypes.add(info.dtype);
      }
    }
  } catch (error) {
    if (!(error instanceof StudioError)) throw error;
    unsupportedReason ??= error.hint ? `${error.message} ${error.hint}` : error.message;
  }

  const tokenizerConfig = readOptionalJson(path.join(absolute, 'tokenizer_config.json'));
  const family = config?.family;
  const linearModules = family === 'gpt2' ? ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'] : ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
  return {
    path: absolute,
    name: path.basename(absolute),
    architecture: Array.isArray(raw.architectures) ? String(raw.architectures[0]) : 'unknown',
    modelType: String(raw.model_type ?? 'unknown'),
    supported: unsupportedReason === undefined,
    unsupportedReason: unsupportedReason ?? (config ? undefined : `Supported architectures: ${SUPPORTED_ARCHITECTURES.join(', ')}.`),
    parameterCount,
    dtype: [...dtypes].join('+') || 'unknown',
    sizeBytes,
    vocabSize: config?.vocabSize ?? Number(raw.vocab_size ?? 0),
    contextLength: config?.maxPositionEmbeddings ?? Number(raw.max_position_embeddings ?? raw.n_positions ?? 0),
    hiddenSize: config?.hiddenSize ?? 0,
    numLayers: config?.numLayers ?? 0,
    numHeads: config?.numHeads ?? 0,
    numKeyValueHeads: config?.numKeyValueHeads ?? 0,
    intermediateSize: config?.intermediateSize ?? 0,
    tieWordEmbeddings: config?.tieWordEmbeddings ?? false,
    linearModules,
    defaultTargets: family === 'gpt2' ? ['c_attn'] : ['q_proj', 'v_proj'],
    hasTokenizer: fs.existsSync(path.join(absolute, 'tokenizer.json')),
    hasChatTemplate: typeof tokenizerConfig?.chat_template === 'string' || Array.isArray(tokenizerConfig?.chat_template),
  };
}

function readOptionalJson(file: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}
