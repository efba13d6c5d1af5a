/**
 * The demo model's architecture, its random initialization, and a greedy decoder used to show
 * samples while it is built.
 */
import * as tf from '@tensorflow/tfjs-core';
import { CausalLM } from '../../src/engine/models';
import { parseModelConfig } from '../../src/engine/models/config';
import type { HostTensor } from '../../src/engine/models/loader';
import { SeededRandom } from '../../src/engine/train/random';

/** Architecture of the demo model: a Llama with grouped-query attention, about 1M parameters. */
export const ARCHITECTURE = {
  hidden_size: 128,
  intermediate_size: 352,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 32,
  max_position_embeddings: 256,
  rope_theta: 10000,
  rms_norm_eps: 1e-5,
  initializer_range: 0.02,
};

/** Builds the `config.json` of the demo model, with the keys transformers writes for LlamaForCausalLM. */
export function modelConfigJson(vocabSize: number, specialIds: { bos: number; eos: number | number[]; pad: number }, torchDtype: string): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: vocabSize,
    ...ARCHITECTURE,
    hidden_act: 'silu',
    attention_bias: false,
    attention_dropout: 0.0,
    mlp_bias: false,
    pretraining_tp: 1,
    rope_scaling: null,
    tie_word_embeddings: true,
    use_cache: true,
    bos_token_id: specialIds.bos,
    eos_token_id: specialIds.eos,
    pad_token_id: specialIds.pad,
    torch_dtype: torchDtype,
  };
}

/**
 * Draws random weights under their Hugging Face names and layouts (`[out, in]` for linear
 * layers). As in GPT-2, they are normal with std `initializer_range`, and the projections that
 * write into the residual stream (o_proj, down_proj) are scaled by `1/√(2·layers)`. Norm weights
 * start at one.
 */
export function initialWeights(config: Record<string, unknown>, seed: number): Map<string, HostTensor> {
  const random = new SeededRandom(seed);
  const hidden = ARCHITECTURE.hidden_size;
  const intermediate = ARCHITECTURE.intermediate_size;
  const layers = ARCHITECTURE.num_hidden_layers;
  const qOut = ARCHITECTURE.num_attention_heads * ARCHITECTURE.head_dim;
  const kvOut = ARCHITECTURE.num_key_value_heads * ARCHITECTURE.head_dim;
  const std = ARCHITECTURE.initializer_range;
  const residualStd = std / Math.sqrt(2 * layers);

  const weights = new Map<string, HostTensor>();
  const normal = (name: string, shape: number[], deviation: number) => weights.set(name, { shape, data: gaussian(random, shape[0] * shape[1], deviation) });
  const ones = (name: string, size: number) => weights.set(name, { shape: [size], data: new Float32Array(size).fill(1) });

  normal('model.embed_tokens.weight', [config.vocab_size as number, hidden], std);
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}`;
    ones(`${p}.input_layernorm.weight`, hidden);
    ones(`${p}.post_attention_layernorm.weight`, hidden);
    normal(`${p}.self_attn.q_proj.weight`, [qOut, hidden], std);
    normal(`${p}.self_attn.k_proj.weight`, [kvOut, hidden], std);
    normal(`${p}.self_attn.v_proj.weight`, [kvOut, hidden], std);
    normal(`${p}.self_attn.o_proj.weight`, [hidden, qOut], residualStd);
    normal(`${p}.mlp.gate_proj.weight`, [intermediate, hidden], std);
    normal(`${p}.mlp.up_proj.weight`, [intermediate, hidden], std);
    normal(`${p}.mlp.down_proj.weight`, [hidden, intermediate], residualStd);
  }
  ones('model.norm.weight', hidden);
  return weights;
}

/** Builds a trainable model (every base weight a `tf.Variable`) from a config and weights. */
export function trainableModel(config: Record<string, unknown>, weights: Map<string, HostTensor>): CausalLM {
  return new CausalLM(parseModelConfig(config, 'demo model config'), weights, 'demo model', { trainableBase: true });
}

/**
 * Splits the model's variables into matrices, which get weight decay, and the embedding table and
 * norm weights, which do not (the usual split for transformer pretraining).
 */
export function parameterGroups(model: CausalLM): { decayed: tf.Variable[]; notDecayed: tf.Variable[] } {
  const decayed = model.linearLayers().map((layer) => layer.kernel as unknown as tf.Variable);
  const norms = [model.finalNorm, ...model.blocks.flatMap((b) => [b.inputNorm, b.postAttentionNorm])].map((n) => n.weight as unknown as tf.Variable);
  return { decayed, notDecayed: [model.embedTokens as unknown as tf.Variable, ...norms] };
}

/** Greedy decoding without a cache (short prompts only): returns the new token ids. */
export function greedyGenerate(model: CausalLM, promptIds: number[], maxNewTokens: number, stopIds: readonly number[]): number[] {
  const ids = [...promptIds];
  const generated: number[] = [];
  for (let i = 0; i < maxNewTokens && ids.length < ARCHITECTURE.max_position_embeddings; i++) {
    const next = tf.tidy(() => {
      const logits = model.forward([ids]); // [1, seq, vocab]
      const last = tf.slice(logits, [0, ids.length - 1, 0], [1, 1, -1]);
      return tf.argMax(tf.reshape(last, [-1])).dataSync()[0];
    });
    if (stopIds.includes(next)) break;
    ids.push(next);
    generated.push(next);
  }
  return generated;
}

function gaussian(random: SeededRandom, count: number, deviation: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    // Box–Muller: two independent normals from two uniforms; 1 − u keeps the logarithm finite.
    const radius = Math.sqrt(-2 * Math.log(1 - random.next())) * deviation;
    const angle = 2 * Math.PI * random.next();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < count) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}
