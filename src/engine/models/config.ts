/**
 * Parses a Hugging Face `config.json` into the fields the transformer needs, for the supported
 * architectures. HF key names are kept in the raw config; the normalized names below follow
 * Llama's (`hidden_size`, `num_key_value_heads`...) because GPT-2's (`n_embd`, `n_head`) map onto them.
 */
import { StudioError } from '../../shared/errors';

export const SUPPORTED_ARCHITECTURES = [
  'GPT2LMHeadModel',
  'LlamaForCausalLM',
  'Qwen2ForCausalLM',
  'MistralForCausalLM',
] as const;

export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];
export type ModelFamily = 'gpt2' | 'llama';

export interface RopeScaling {
  type: 'linear' | 'llama3';
  factor: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
}

export interface ModelConfig {
  architecture: Architecture;
  /** gpt2: LayerNorm, learned positions, Conv1D, GELU. llama: RMSNorm, RoPE, SwiGLU (also Qwen2, Mistral). */
  family: ModelFamily;
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  intermediateSize: number;
  maxPositionEmbeddings: number;
  normEps: number;
  ropeTheta: number;
  ropeScaling?: RopeScaling;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v projections (Qwen2 always; Llama when `attention_bias`). */
  qkvBias: boolean;
  /** Bias on the output projection (Llama `attention_bias`). */
  outputBias: boolean;
  mlpBias: boolean;
  hiddenAct: string;
  bosTokenId?: number;
  eosTokenId?: number | number[];
  padTokenId?: number;
  torchDtype?: string;
  raw: Record<string, unknown>;
}

/** Turns a parsed config.json into a ModelConfig; `source` names the file in errors. */
export function parseModelConfig(value: unknown, source: string): ModelConfig {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new StudioError('MODEL_FORMAT', `${source} must contain a JSON object, got ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value}.`, 'Restore config.json from the model repository.');
  }
  const raw = value as Record<string, unknown>;
  const architectures = raw.architectures;
  const architecture = Array.isArray(architectures) ? String(architectures[0]) : undefined;
  if (!architecture || !(SUPPORTED_ARCHITECTURES as readonly string[]).includes(architecture)) {
    throw new StudioError(
      'MODEL_UNSUPPORTED',
      `${source}: architecture ${architecture ? `"${architecture}"` : '(none: "architectures" is missing)'} is not supported.`,
      `Supported architectures: ${SUPPORTED_ARCHITECTURES.join(', ')}.`,
    );
  }
  const arch = architecture as Architecture;
  return arch === 'GPT2LMHeadModel' ? parseGpt2(raw, source) : parseLlamaLike(arch, raw, source);
}

function parseGpt2(raw: Record<string, unknown>, source: string): ModelConfig {
  const get = numberReader(raw, source);
  const hiddenSize = get('n_embd');
  const numHeads = get('n_head');
  const activation = String(raw.activation_function ?? 'gelu_new');
  if (!['gelu_new', 'gelu_pytorch_tanh', 'gelu'].includes(activation)) {
    throw new StudioError('MODEL_UNSUPPORTED', `${source}: activation_function "${activation}" is not supported.`, 'Supported: gelu_new, gelu_pytorch_tanh, gelu.');
  }
  if (raw.scale_attn_by_inverse_layer_idx === true || raw.reorder_and_upcast_attn === true) {
    throw new StudioError('MODEL_UNSUPPORTED', `${source}: scale_attn_by_inverse_layer_idx and reorder_and_upcast_attn are not supported.`, 'Use a GPT-2 config with both set to false (the default).');
  }
  return {
    architecture: 'GPT2LMHeadModel',
    family: 'gpt2',
    modelType: String(raw.model_type ?? 'gpt2'),
    vocabSize: get('vocab_size'),
    hiddenSize,
    numLayers: get('n_layer'),
    numHeads,
    numKeyValueHeads: numHeads,
    headDim: divide(hiddenSize, numHeads, 'n_embd', 'n_head', source),
    intermediateSize: typeof raw.n_inner === 'number' ? raw.n_inner : 4 * hiddenSize,
    maxPositionEmbeddings: get('n_positions'),
    normEps: optionalPositive(raw, 'layer_norm_epsilon', 1e-5, source),
    ropeTheta: 0,
    tieWordEmbeddings: raw.tie_word_embeddings !== false,
    qkvBias: true,
    outputBias: true,
    mlpBias: true,
    hiddenAct: activation,
    bosTokenId: optionalNumber(raw.bos_token_id),
    eosTokenId: raw.eos_token_id as number | number[] | undefined,
    padTokenId: optionalNumber(raw.pad_token_id),
    torchDtype: typeof raw.torch_dtype === 'string' ? raw.torch_dtype : undefined,
    raw,
  };
}

function parseLlamaLike(arch: Architecture, raw: Record<string, unknown>, source: string): ModelConfig {
  const get = numberReader(raw, source);
  const hiddenSize = get('hidden_size');
  const numHeads = get('num_attention_heads');
  const numKeyValueHeads = typeof raw.num_key_value_heads === 'number' ? raw.num_key_value_heads : numHeads;
  if (numHeads % numKeyValueHeads !== 0) {
    throw new StudioError('MODEL_FORMAT', `${source}: num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKeyValueHeads}).`, 'Check the config file.');
  }
  const headDim = typeof raw.head_dim === 'number' ? raw.head_dim : divide(hiddenSize, numHeads, 'hidden_size', 'num_attention_heads', source);
  const hiddenAct = String(raw.hidden_act ?? 'silu');
  if (hiddenAct !== 'silu') {
    throw new StudioError('MODEL_UNSUPPORTED', `${source}: hidden_act "${hiddenAct}" is not supported.`, 'Supported: silu (SwiGLU).');
  }
  const attentionBias = raw.attention_bias === true;
  return {
    architecture: arch,
    family: 'llama',
    modelType: String(raw.model_type ?? 'llama'),
    vocabSize: get('vocab_size'),
    hiddenSize,
    numLayers: get('num_hidden_layers'),
    numHeads,
    numKeyValueHeads,
    headDim,
    intermediateSize: get('intermediate_size'),
    maxPositionEmbeddings: typeof raw.max_position_embeddings === 'number' ? raw.max_position_embeddings : 2048,
    normEps: optionalPositive(raw, 'rms_norm_eps', 1e-6, source),
    ropeTheta: optionalPositive(raw, 'rope_theta', 10000, source),
    ropeScaling: parseRopeScaling(raw.rope_scaling, source),
    tieWordEmbeddings: raw.tie_word_embeddings === true,
    qkvBias: arch === 'Qwen2ForCausalLM' ? true : attentionBias,
    outputBias: arch === 'Qwen2ForCausalLM' ? false : attentionBias,
    mlpBias: raw.mlp_bias === true,
    hiddenAct,
    bosTokenId: optionalNumber(raw.bos_token_id),
    eosTokenId: raw.eos_token_id as number | number[] | undefined,
    padTokenId: optionalNumber(raw.pad_token_id),
    torchDtype: typeof raw.torch_dtype === 'string' ? raw.torch_dtype : undefined,
    raw,
  };
}

function parseRopeScaling(value: unknown, source: string): RopeScaling | undefined {
  if (value === null || value === undefined) return undefined;
  const scaling = value as Record<string, unknown>;
  const type = String(scaling.rope_type ?? scaling.type ?? '');
  if (type === 'default') return undefined;
  if (type !== 'linear' && type !== 'llama3') {
    throw new StudioError('MODEL_UNSUPPORTED', `${source}: rope_scaling type "${type}" is not supported.`, 'Supported rope_scaling types: linear, llama3.');
  }
  const factor = Number(scaling.factor);
  if (!(factor > 0)) {
    throw new StudioError('MODEL_FORMAT', `${source}: rope_scaling.factor must be a positive number, got ${JSON.stringify(scaling.factor)}.`);
  }
  if (type === 'linear') return { type, factor };
  return {
    type,
    factor,
    lowFreqFactor: Number(scaling.low_freq_factor ?? 1),
    highFreqFactor: Number(scaling.high_freq_factor ?? 4),
    originalMaxPositionEmbeddings: Number(scaling.original_max_position_embeddings ?? 8192),
  };
}

function numberReader(raw: Record<string, unknown>, source: string) {
  return (key: string): number => {
    const value = raw[key];
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      throw new StudioError('MODEL_FORMAT', `${source}: "${key}" must be a positive number, got ${JSON.stringify(value)}.`, 'Check the config file.');
    }
    return value;
  };
}

/** Reads an optional positive setting: `fallback` when absent or null, MODEL_FORMAT when not a positive finite number. */
function optionalPositive(raw: Record<string, unknown>, key: string, fallback: number, source: string): number {
  const value = raw[key];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new StudioError('MODEL_FORMAT', `${source}: "${key}" must be a positive number, got ${JSON.stringify(value)}.`, `Check the config file; the usual value is ${fallback}.`);
  }
  return value;
}

function divide(a: number, b: number, aKey: string, bKey: string, source: string): number {
  if (a % b !== 0) {
    throw new StudioError('MODEL_FORMAT', `${source}: ${aKey} (${a}) is not divisible by ${bKey} (${b}).`, 'Check the config file.');
  }
  return a / b;
}

function optionalNumber(value: unknown): number | undefined {
  return typeof value === 'number' ? value : undefined;
}

/** Returns the EOS ids as a list (configs store one id or several). */
export function eosIds(config: Pick<ModelConfig, 'eosTokenId'>): number[] {
  const eos = config.eosTokenId;
  if (eos === undefined) return [];
  return Array.isArray(eos) ? eos : [eos];
}
