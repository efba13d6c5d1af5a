/**
 * Tiny random causal LMs in Hugging Face format for end-to-end tests: `config.json` with the keys
 * transformers writes, `generation_config.json`, `model.safetensors`, and optionally the real GPT-2
 * tokenizer files. The vocabulary is GPT-2's (50,257 tokens) so real datasets tokenize, while two
 * small blocks keep a training step cheap.
 *
 * Linear weights are normal with std 0.02 (transformers' `initializer_range` default), token
 * embeddings normal with std 0.05 (see EMBEDDING_STD), norm weights 1 and biases 0. The logits
 * then start near zero, so the first loss is close to ln(50257) ≈ 10.82.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeSafetensors, type TensorToWrite } from '../../src/engine/models/safetensors';
import { SeededRandom } from '../../src/engine/train/random';
import { FIXTURES } from './fixtures';

export type TinyFamily = 'llama' | 'gpt2';

export interface TinyModelOptions {
  family: TinyFamily;
  /** Seed of the weights; the same seed writes the same bytes. */
  seed: number;
  /** Copies the GPT-2 `tokenizer.json` and `tokenizer_config.json` into the folder. */
  withTokenizer: boolean;
}

/** The GPT-2 tokenizer files copied into a model folder. */
export const GPT2_TOKENIZER_DIR = path.join(FIXTURES, 'tokenizers', 'gpt2');

/** Size of the GPT-2 vocabulary, which every tiny model uses. */
export const TINY_VOCAB_SIZE = 50257;
/** `<|endoftext|>`: GPT-2's BOS, EOS and pad token. */
export const TINY_EOS_TOKEN_ID = 50256;

/** Layer sizes shared by both families. */
export const TINY_DIMENSIONS = {
  hiddenSize: 32,
  numLayers: 2,
  numHeads: 4,
  /** Llama only: two query heads share each key/value head (GQA). */
  numKeyValueHeads: 2,
  headDim: 8,
  /** Llama's SwiGLU width; GPT-2 uses 4 · hiddenSize. */
  intermediateSize: 64,
  maxPositions: 256,
} as const;

const INIT_STD = 0.02;
/**
 * The token embeddings are also the LM head (tied), so their norm bounds how far a LoRA can move
 * the logits. At 0.02 a 20-step run lowers the loss by a few hundredths, as much as the step-to-step
 * noise. At 0.05 the fall is clear, and the first logits have a std of about 0.05 · 32 ≈ 0.3 (the
 * normalized hidden state has norm √32), so the expected first loss is ln(50257) + 0.3² / 2 ≈ 10.87.
 */
const EMBEDDING_STD = 0.05;

/** Returns `{inFeatures, outFeatures}` of every LoRA-targetable linear layer, by its PEFT module path. */
export function tinyLinearShapes(family: TinyFamily): Map<string, { inFeatures: number; outFeatures: number }> {
  const d = TINY_DIMENSIONS;
  const shapes = new Map<string, { inFeatures: number; outFeatures: number }>();
  for (let i = 0; i < d.numLayers; i++) {
    if (family === 'gpt2') {
      const p = `transformer.h.${i}`;
      shapes.set(`${p}.attn.c_attn`, { inFeatures: d.hiddenSize, outFeatures: 3 * d.hiddenSize });
      shapes.set(`${p}.attn.c_proj`, { inFeatures: d.hiddenSize, outFeatures: d.hiddenSize });
      shapes.set(`${p}.mlp.c_fc`, { inFeatures: d.hiddenSize, outFeatures: 4 * d.hiddenSize });
      shapes.set(`${p}.mlp.c_proj`, { inFeatures: 4 * d.hiddenSize, outFeatures: d.hiddenSize });
    } else {
      const p = `model.layers.${i}`;
      const qOut = d.numHeads * d.headDim;
      const kvOut = d.numKeyValueHeads * d.headDim;
      shapes.set(`${p}.self_attn.q_proj`, { inFeatures: d.hiddenSize, outFeatures: qOut });
      shapes.set(`${p}.self_attn.k_proj`, { inFeatures: d.hiddenSize, outFeatures: kvOut });
      shapes.set(`${p}.self_attn.v_proj`, { inFeatures: d.hiddenSize, outFeatures: kvOut });
      shapes.set(`${p}.self_attn.o_proj`, { inFeatures: qOut, outFeatures: d.hiddenSize });
      shapes.set(`${p}.mlp.gate_proj`, { inFeatures: d.hiddenSize, outFeatures: d.intermediateSize });
      shapes.set(`${p}.mlp.up_proj`, { inFeatures: d.hiddenSize, outFeatures: d.intermediateSize });
      shapes.set(`${p}.mlp.down_proj`, { inFeatures: d.intermediateSize, outFeatures: d.hiddenSize });
    }
  }
  return shapes;
}

/** Writes a tiny random model folder into `dir` (created if missing) and returns `dir`. */
export function writeTinyModel(dir: string, options: TinyModelOptions): string {
  fs.mkdirSync(dir, { recursive: true });
  const random = new GaussianSource(options.seed);
  const tensors = options.family === 'gpt2' ? gpt2Tensors(random) : llamaTensors(random);
  const config = options.family === 'gpt2' ? gpt2Config() : llamaConfig();

  writeJson(path.join(dir, 'config.json'), config);
  writeJson(path.join(dir, 'generation_config.json'), {
    bos_token_id: TINY_EOS_TOKEN_ID,
    eos_token_id: TINY_EOS_TOKEN_ID,
    transformers_version: '4.44.0',
  });
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });

  if (options.withTokenizer) {
    for (const file of ['tokenizer.json', 'tokenizer_config.json']) {
      fs.copyFileSync(path.join(GPT2_TOKENIZER_DIR, file), path.join(dir, file));
    }
  }
  return dir;
}

function llamaConfig(): Record<string, unknown> {
  const d = TINY_DIMENSIONS;
  return {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: TINY_EOS_TOKEN_ID,
    eos_token_id: TINY_EOS_TOKEN_ID,
    hidden_act: 'silu',
    hidden_size: d.hiddenSize,
    initializer_range: INIT_STD,
    intermediate_size: d.intermediateSize,
    max_position_embeddings: d.maxPositions,
    mlp_bias: false,
    model_type: 'llama',
    num_attention_heads: d.numHeads,
    num_hidden_layers: d.numLayers,
    num_key_value_heads: d.numKeyValueHeads,
    pretraining_tp: 1,
    rms_norm_eps: 1e-6,
    rope_scaling: null,
    rope_theta: 10000.0,
    // Tied, as in SmolLM2: an untied [vocab, hidden] head would double the file for no coverage.
    tie_word_embeddings: true,
    torch_dtype: 'float32',
    transformers_version: '4.44.0',
    use_cache: true,
    vocab_size: TINY_VOCAB_SIZE,
  };
}

function gpt2Config(): Record<string, unknown> {
  const d = TINY_DIMENSIONS;
  return {
    activation_function: 'gelu_new',
    architectures: ['GPT2LMHeadModel'],
    attn_pdrop: 0.0,
    bos_token_id: TINY_EOS_TOKEN_ID,
    embd_pdrop: 0.0,
    eos_token_id: TINY_EOS_TOKEN_ID,
    initializer_range: INIT_STD,
    layer_norm_epsilon: 1e-5,
    model_type: 'gpt2',
    n_embd: d.hiddenSize,
    n_head: d.numHeads,
    n_inner: null,
    n_layer: d.numLayers,
    n_positions: d.maxPositions,
    reorder_and_upcast_attn: false,
    resid_pdrop: 0.0,
    scale_attn_by_inverse_layer_idx: false,
    scale_attn_weights: true,
    torch_dtype: 'float32',
    transformers_version: '4.44.0',
    use_cache: true,
    vocab_size: TINY_VOCAB_SIZE,
  };
}

function llamaTensors(random: GaussianSource): Record<string, TensorToWrite> {
  const d = TINY_DIMENSIONS;
  const tensors: Record<string, TensorToWrite> = {
    'model.embed_tokens.weight': random.matrix([TINY_VOCAB_SIZE, d.hiddenSize], EMBEDDING_STD),
    'model.norm.weight': filled([d.hiddenSize], 1),
  };
  for (let i = 0; i < d.numLayers; i++) {
    const p = `model.layers.${i}`;
    tensors[`${p}.input_layernorm.weight`] = filled([d.hiddenSize], 1);
    tensors[`${p}.post_attention_layernorm.weight`] = filled([d.hiddenSize], 1);
  }
  // nn.Linear stores its weight as [out, in].
  for (const [name, shape] of tinyLinearShapes('llama')) {
    tensors[`${name}.weight`] = random.matrix([shape.outFeatures, shape.inFeatures]);
  }
  return tensors;
}

function gpt2Tensors(random: GaussianSource): Record<string, TensorToWrite> {
  const d = TINY_DIMENSIONS;
  const tensors: Record<string, TensorToWrite> = {
    'transformer.wte.weight': random.matrix([TINY_VOCAB_SIZE, d.hiddenSize], EMBEDDING_STD),
    'transformer.wpe.weight': random.matrix([d.maxPositions, d.hiddenSize]),
    'transformer.ln_f.weight': filled([d.hiddenSize], 1),
    'transformer.ln_f.bias': filled([d.hiddenSize], 0),
  };
  for (let i = 0; i < d.numLayers; i++) {
    const p = `transformer.h.${i}`;
    for (const norm of ['ln_1', 'ln_2']) {
      tensors[`${p}.${norm}.weight`] = filled([d.hiddenSize], 1);
      tensors[`${p}.${norm}.bias`] = filled([d.hiddenSize], 0);
    }
  }
  // GPT-2's Conv1D stores its weight as [in, out], with a bias of [out].
  for (const [name, shape] of tinyLinearShapes('gpt2')) {
    tensors[`${name}.weight`] = random.matrix([shape.inFeatures, shape.outFeatures]);
    tensors[`${name}.bias`] = filled([shape.outFeatures], 0);
  }
  return tensors;
}

/** Zero-mean normal matrices drawn from SeededRandom by the Box–Muller transform. */
class GaussianSource {
  private readonly uniform: SeededRandom;

  constructor(seed: number) {
    this.uniform = new SeededRandom(seed);
  }

  matrix(shape: [number, number], std = INIT_STD): TensorToWrite {
    const data = new Float32Array(shape[0] * shape[1]);
    for (let i = 0; i < data.length; i += 2) {
      // 1 - u is in (0, 1], so the logarithm stays finite.
      const radius = Math.sqrt(-2 * Math.log(1 - this.uniform.next())) * std;
      const angle = 2 * Math.PI * this.uniform.next();
      data[i] = radius * Math.cos(angle);
      if (i + 1 < data.length) data[i + 1] = radius * Math.sin(angle);
    }
    return { dtype: 'F32', shape, data };
  }
}

function filled(shape: number[], value: number): TensorToWrite {
  return { dtype: 'F32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(value) };
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + '\n');
}
