/**
 * Benchmark scenarios: real model shapes with random weights, written as a Hugging Face folder
 * (config.json + model.safetensors) so the benchmark loads them through `loadModel`, the same
 * path a downloaded model takes.
 */
import fs from 'node:fs';
import path from 'node:path';

export type Family = 'gpt2' | 'llama';

/** Transformer shape, in the terms of the FLOP count and the PyTorch peer. */
export interface ModelShape {
  family: Family;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  positions: number;
  ropeTheta: number;
}

export interface Scenario {
  name: string;
  description: string;
  shape: ModelShape;
  seq: number;
  batch: number;
  /** LoRA rank on the attention projections. */
  rank: number;
  /** Base weights quantized to NF4 (QLoRA) instead of float32. */
  quantized: boolean;
  /** Timed optimizer steps (after one warm-up step). */
  steps: number;
  /** Trainer steps added after the timed and profiled ones to check that the tensor count stays flat. */
  driftSteps: number;
}

const GPT2_124M: ModelShape = { family: 'gpt2', hidden: 768, layers: 12, heads: 12, kvHeads: 12, intermediate: 3072, vocab: 50257, positions: 1024, ropeTheta: 0 };
const SMOLLM_135M: ModelShape = { family: 'llama', hidden: 576, layers: 30, heads: 9, kvHeads: 3, intermediate: 1536, vocab: 49152, positions: 2048, ropeTheta: 10000 };

/**
 * The scenario list. `quick` keeps the widths, vocabularies and head layouts (so per-layer
 * kernels have their real sizes) but cuts the depth, the sequence and the step counts.
 */
export function buildScenarios(quick: boolean, driftSteps = 0): Scenario[] {
  const full = (shape: ModelShape, layers: number) => ({ ...shape, layers: quick ? layers : shape.layers });
  const steps = quick ? 2 : 3;
  return [
    {
      name: 'gpt2-124m',
      description: 'GPT-2 124M shape, LoRA r=16 on c_attn and attn.c_proj',
      shape: full(GPT2_124M, 2),
      seq: quick ? 128 : 256,
      batch: quick ? 2 : 4,
      rank: 16,
      quantized: false,
      steps,
      driftSteps,
    },
    {
      name: 'smollm-135m',
      description: 'SmolLM-135M shape (Llama, GQA 9/3), LoRA r=16 on q/k/v/o_proj',
      shape: full(SMOLLM_135M, 4),
      seq: quick ? 128 : 256,
      batch: quick ? 2 : 4,
      rank: 16,
      quantized: false,
      steps,
      driftSteps,
    },
    {
      name: 'smollm-135m-long',
      description: 'SmolLM-135M shape, one sequence of 1024 tokens',
      shape: full(SMOLLM_135M, 4),
      seq: quick ? 512 : 1024,
      batch: 1,
      rank: 16,
      quantized: false,
      steps,
      driftSteps,
    },
    {
      name: 'smollm-135m-qlora',
      description: 'SmolLM-135M shape, NF4 base weights (QLoRA), LoRA r=16 on q/k/v/o_proj',
      shape: full(SMOLLM_135M, 4),
      seq: quick ? 128 : 256,
      batch: quick ? 2 : 4,
      rank: 16,
      quantized: true,
      steps,
      driftSteps,
    },
  ];
}

/** PEFT target module names for the attention projections of a family. */
export function attentionTargets(family: Family): string[] {
  return family === 'gpt2' ? ['c_attn', 'attn.c_proj'] : ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
}

/** Hugging Face `config.json` for a shape. */
export function hfConfig(shape: ModelShape): Record<string, unknown> {
  if (shape.family === 'gpt2') {
    return {
      architectures: ['GPT2LMHeadModel'],
      model_type: 'gpt2',
      n_embd: shape.hidden,
      n_layer: shape.layers,
      n_head: shape.heads,
      n_positions: shape.positions,
      n_ctx: shape.positions,
      vocab_size: shape.vocab,
      activation_function: 'gelu_new',
      layer_norm_epsilon: 1e-5,
      tie_word_embeddings: true,
    };
  }
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: shape.hidden,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    intermediate_size: shape.intermediate,
    vocab_size: shape.vocab,
    max_position_embeddings: shape.positions,
    rms_norm_eps: 1e-5,
    rope_theta: shape.ropeTheta,
    hidden_act: 'silu',
    tie_word_embeddings: true,
    attention_bias: false,
    mlp_bias: false,
  };
}

/** Checkpoint tensor names and shapes, in the layout Hugging Face saves them. */
export function checkpointShapes(shape: ModelShape): Map<string, number[]> {
  const h = shape.hidden;
  const shapes = new Map<string, number[]>();
  if (shape.family === 'gpt2') {
    shapes.set('transformer.wte.weight', [shape.vocab, h]);
    shapes.set('transformer.wpe.weight', [shape.positions, h]);
    for (let i = 0; i < shape.layers; i++) {
      const p = `transformer.h.${i}`;
      for (const norm of ['ln_1', 'ln_2']) {
        shapes.set(`${p}.${norm}.weight`, [h]);
        shapes.set(`${p}.${norm}.bias`, [h]);
      }
      // Conv1D weights are [in, out].
      const conv: [string, number, number][] = [['attn.c_attn', h, 3 * h], ['attn.c_proj', h, h], ['mlp.c_fc', h, shape.intermediate], ['mlp.c_proj', shape.intermediate, h]];
      for (const [name, inFeatures, outFeatures] of conv) {
        shapes.set(`${p}.${name}.weight`, [inFeatures, outFeatures]);
        shapes.set(`${p}.${name}.bias`, [outFeatures]);
      }
    }
    shapes.set('transformer.ln_f.weight', [h]);
    shapes.set('transformer.ln_f.bias', [h]);
    return shapes;
  }
  const headDim = h / shape.heads;
  shapes.set('model.embed_tokens.weight', [shape.vocab, h]);
  for (let i = 0; i < shape.layers; i++) {
    const p = `model.layers.${i}`;
    shapes.set(`${p}.input_layernorm.weight`, [h]);
    shapes.set(`${p}.post_attention_layernorm.weight`, [h]);
    // nn.Linear weights are [out, in].
    shapes.set(`${p}.self_attn.q_proj.weight`, [shape.heads * headDim, h]);
    shapes.set(`${p}.self_attn.k_proj.weight`, [shape.kvHeads * headDim, h]);
    shapes.set(`${p}.self_attn.v_proj.weight`, [shape.kvHeads * headDim, h]);
    shapes.set(`${p}.self_attn.o_proj.weight`, [h, shape.heads * headDim]);
    shapes.set(`${p}.mlp.gate_proj.weight`, [shape.intermediate, h]);
    shapes.set(`${p}.mlp.up_proj.weight`, [shape.intermediate, h]);
    shapes.set(`${p}.mlp.down_proj.weight`, [h, shape.intermediate]);
  }
  shapes.set('model.norm.weight', [h]);
  return shapes;
}

/**
 * Writes `config.json` and a float32 `model.safetensors` with seeded uniform weights in
 * [-0.04, 0.04] (norm weights 1, biases 0) into `dir`. The tensors are streamed to the file, so
 * a 124M-parameter model needs no second copy in memory.
 */
export function writeRandomModel(dir: string, shape: ModelShape, seed: number): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hfConfig(shape), null, 2));

  const shapes = checkpointShapes(shape);
  const names = [...shapes.keys()].sort();
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const name of names) {
    const bytes = 4 * shapes.get(name)!.reduce((a, b) => a * b, 1);
    header[name] = { dtype: 'F32', shape: shapes.get(name), data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let headerText = JSON.stringify(header);
  headerText += ' '.repeat((8 - (Buffer.byteLength(headerText) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(headerText)));

  const fd = fs.openSync(path.join(dir, 'model.safetensors'), 'w');
  try {
    fs.writeSync(fd, length);
    fs.writeSync(fd, headerText);
    let state = seed >>> 0;
    for (const name of names) {
      const count = shapes.get(name)!.reduce((a, b) => a * b, 1);
      const data = new Float32Array(count);
      if (/norm|ln_/.test(name) && name.endsWith('.weight')) data.fill(1);
      else if (!name.endsWith('.bias')) {
        for (let i = 0; i < count; i++) {
          // xorshift32: fast and seeded; the values only need to be finite and small.
          state ^= state << 13;
          state ^= state >>> 17;
          state ^= state << 5;
          data[i] = ((state >>> 0) / 4294967296 - 0.5) * 0.08;
        }
      }
      fs.writeSync(fd, new Uint8Array(data.buffer));
    }
  } finally {
    fs.closeSync(fd);
  }
}
