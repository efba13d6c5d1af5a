/**
 * Decoder-only transformers for the supported Hugging Face causal LMs, in tfjs.
 *
 * Two families share one forward pass:
 * - `gpt2` (GPT2LMHeadModel): learned positions, pre-LayerNorm, fused `c_attn` Conv1D, tanh GELU MLP.
 * - `llama` (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM): RoPE, RMSNorm, grouped-query
 *   attention, SwiGLU MLP; Qwen2 adds q/k/v biases.
 *
 * The numerics follow transformers 4.44 in float32 (eager attention): the engine's logits match
 * its logits to 1e-4 on the fixtures. Base weights are plain tensors (never `tf.Variable`), so
 * only LoRA tensors are trainable.
 */
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../../shared/errors';
import type { ModelConfig } from './config';
import { INFERENCE, Linear, type ForwardContext } from './linear';
import type { HostTensor } from './loader';
import type { TensorToWrite } from './safetensors';
import { chunkedGroupedAttention } from './attention';
import { batchedMatMul, frozenMatMul, frozenMatMulTransposed, transposesAreFree } from './matmul';
import type { FrozenHead } from './head-loss';
import { QuantizedWeight, quantizedProduct, type QuantSettings } from '../quant/qlinear';
import { unaryCustomGrad } from './ops';
import { nativeGeluTanh, nativeGeluTanhGrad, nativeKernelsActive, nativeSilu, nativeSiluGrad } from '../backend/native-kernels';
import { ropeInverseFrequencies, ropeTables } from './rope';
import { layerNorm, mergeHeads, residualAdd, rmsNorm, rope, splitHeads, swiglu } from './fused-ops';

/** Additive mask value for positions a query may not attend to. */
const MASKED = -1e9;

interface Norm {
  weight: tf.Tensor1D;
  bias: tf.Tensor1D | null;
}

interface Block {
  inputNorm: Norm;
  postAttentionNorm: Norm;
  /** llama: q_proj, k_proj, v_proj; gpt2: c_attn (fused q, k, v). */
  attention: Linear[];
  outputProjection: Linear;
  /** llama: gate_proj, up_proj, down_proj; gpt2: c_fc, c_proj. */
  mlp: Linear[];
}

/** Keys and values of earlier positions, per layer: `[batch, kvHeads, pastLength, headDim]`. */
export interface KvCache {
  keys: tf.Tensor4D[];
  values: tf.Tensor4D[];
  length: number;
}

export interface ForwardOptions {
  /** `[batch, seq]` of 0/1; 0 marks padding keys (left or right). Default: all ones. */
  attentionMask?: number[][];
  /** `[batch, seq]` positions; default `past + 0..seq-1` for every row. */
  positionIds?: number[][];
  context?: ForwardContext;
  /** Keys/values of earlier tokens; the new ones are appended to it in place (generation). */
  cache?: KvCache;
  /**
   * Wraps each transformer block, e.g. to recompute its activations in the backward pass
   * (gradient checkpointing). With `cache`, `attentionMask` may cover `[batch, past + seq]`.
   */
  recomputeBlock?: (block: (hidden: tf.Tensor2D) => tf.Tensor2D, hidden: tf.Tensor2D) => tf.Tensor2D;
  /** Processes queries in chunks of this many positions (see `attentionChunkSize`); default: all at once. */
  attentionChunkSize?: number;
}

export class CausalLM {
  readonly config: ModelConfig;
  readonly embedTokens: tf.Tensor2D; // [vocab, hidden]
  readonly positionEmbeddings: tf.Tensor2D | null; // gpt2 only: [positions, hidden]
  readonly blocks: Block[];
  readonly finalNorm: Norm;
  /** Null when the LM head is tied to the token embeddings. */
  readonly lmHead: Linear | null;
  private readonly inverseFrequencies: Float32Array | null;
  private ropeCache: { length: number; cos: tf.Tensor2D; sin: tf.Tensor2D } | null = null;
  /** `embedTokensᵀ [hidden, vocab]` for the tied LM head, built on first use. */
  private embedTokensTransposed: tf.Tensor2D | null = null;

  /**
   * @param options.trainableBase makes every base weight a `tf.Variable` (full fine-tuning and
   *   pretraining); LoRA training leaves it false so base weights stay frozen constants.
   * @param options.quantize quantizes the blocks' linear layers on the host as they load (QLoRA),
   *   so their float32 weights never reach the backend. Embeddings, norms and the LM head stay float32.
   */
  constructor(config: ModelConfig, weights: Map<string, HostTensor>, source = 'model', options: { trainableBase?: boolean; quantize?: QuantSettings } = {}) {
    this.config = config;
    const take = weightTaker(weights, source, options.trainableBase === true, options.quantize);
    const family = config.family;

    if (family === 'gpt2') {
      this.embedTokens = take.matrix('transformer.wte.weight', [config.vocabSize, config.hiddenSize]);
      this.positionEmbeddings = take.matrix('transformer.wpe.weight', [config.maxPositionEmbeddings, config.hiddenSize]);
      this.blocks = range(config.numLayers).map((i) => buildGpt2Block(config, i, take));
      this.finalNorm = { weight: take.vector('transformer.ln_f.weight', config.hiddenSize), bias: take.vector('transformer.ln_f.bias', config.hiddenSize) };
      this.lmHead = config.tieWordEmbeddings || !take.has('lm_head.weight') ? null : take.linear('lm_head', config.hiddenSize, config.vocabSize, false, false);
      this.inverseFrequencies = null;
    } else {
      this.embedTokens = take.matrix('model.embed_tokens.weight', [config.vocabSize, config.hiddenSize]);
      this.positionEmbeddings = null;
      this.blocks = range(config.numLayers).map((i) => buildLlamaBlock(config, i, take));
      this.finalNorm = { weight: take.vector('model.norm.weight', config.hiddenSize), bias: null };
      this.lmHead = config.tieWordEmbeddings ? null : take.linear('lm_head', config.hiddenSize, config.vocabSize, false, false);
      this.inverseFrequencies = ropeInverseFrequencies(config.headDim, config.ropeTheta, config.ropeScaling);
    }
  }

  /** Returns every linear layer in checkpoint order; LoRA targets are chosen from these. */
  linearLayers(): Linear[] {
    const layers = this.blocks.flatMap((b) => [...b.attention, b.outputProjection, ...b.mlp]);
    return this.lmHead ? [...layers, this.lmHead] : layers;
  }

  /** Total parameter count of the base model (tied embeddings counted once). */
  parameterCount(): number {
    let count = this.embedTokens.size + (this.positionEmbeddings?.size ?? 0);
    for (const layer of this.linearLayers()) count += layer.baseParameterCount;
    const norms = [this.finalNorm, ...this.blocks.flatMap((b) => [b.inputNorm, b.postAttentionNorm])];
    for (const norm of norms) count += norm.weight.size + (norm.bias?.size ?? 0);
    return count;
  }

  /**
   * Computes the final hidden states `[batch·seq, hidden]` for `inputIds [batch, seq]`, after the last norm.
   */
  hiddenStates(inputIds: number[][], options: ForwardOptions = {}): tf.Tensor2D {
    const context = options.context ?? INFERENCE;
    const batch = inputIds.length;
    const seq = inputIds[0].length;
    const past = options.cache?.length ?? 0;
    const positions = options.positionIds ?? inputIds.map(() => range(seq).map((i) => past + i));
    if (this.positionEmbeddings) checkLearnedPositions(positions, this.positionEmbeddings.shape[0]);
    const mask = buildAttentionMask(batch, seq, past, options.attentionMask);

    const ids = tf.tensor2d(inputIds.flat(), [batch * seq, 1], 'int32');
    let hidden = embeddingLookup(this.embedTokens, tf.reshape(ids, [batch * seq]) as tf.Tensor1D);
    if (this.positionEmbeddings) {
      const positionTensor = tf.tensor1d(positions.flat(), 'int32');
      hidden = tf.add(hidden, embeddingLookup(this.positionEmbeddings, positionTensor));
    }
    const rope = this.inverseFrequencies ? this.ropeFor(positions, batch, seq) : null;

    // Each block runs in its own tidy, so the intermediates that no gradient saved are freed when
    // the block ends rather than when the whole forward pass does. What the backward pass needs
    // is saved by the engine (a separate handle on the same buffer) and survives the tidy.
    this.blocks.forEach((block, layerIndex) => {
      const run = (h: tf.Tensor2D) => this.block(block, layerIndex, h, { batch, seq, mask, rope, context, cache: options.cache, attentionChunkSize: options.attentionChunkSize });
      const input = hidden;
      hidden = options.recomputeBlock ? options.recomputeBlock(run, input) : tf.tidy(() => run(input));
    });
    if (options.cache) options.cache.length += seq;

    return this.norm(this.finalNorm, hidden);
  }

  /** Logits `[batch, seq, vocab]`. */
  forward(inputIds: number[][], options: ForwardOptions = {}): tf.Tensor3D {
    return tf.tidy(() => {
      const hidden = this.hiddenStates(inputIds, options);
      return tf.reshape(this.logits(hidden, options.context ?? INFERENCE), [inputIds.length, inputIds[0].length, this.config.vocabSize]);
    });
  }

  /** LM head: `[tokens, hidden] → [tokens, vocab]`. */
  logits(hidden: tf.Tensor2D, context: ForwardContext = INFERENCE): tf.Tensor2D {
    if (this.lmHead) return this.lmHead.apply(hidden, context);
    if ((this.embedTokens as Partial<tf.Variable>).trainable) return tf.matMul(hidden, this.embedTokens, false, true);
    if (transposesAreFree()) return frozenMatMulTransposed(hidden, this.embedTokens);
    return frozenMatMul(hidden, this.transposedEmbedding(), () => this.embedTokens);
  }

  /**
   * Returns the LM head as two products for the chunked loss (`head-loss.ts`). Returns null when
   * the head trains (full fine-tuning, LoRA on `lm_head`), is quantized or has a bias, because
   * those need the plain path.
   */
  frozenHead(): FrozenHead | null {
    const vocabSize = this.config.vocabSize;
    const head = this.lmHead;
    if (head) {
      const kernel = head.kernel;
      if (!kernel || head.lora || head.bias || (kernel as Partial<tf.Variable>).trainable) return null;
      // kernel [hidden, vocab]: logits = x · kernel, input gradient = dlogits · kernelᵀ.
      let transposed: tf.Tensor2D | null = null;
      return {
        vocabSize,
        logits: (x) => tf.matMul(x, kernel),
        inputGradient: (dLogits) => {
          if (transposesAreFree()) return tf.matMul(dLogits, kernel, false, true);
          transposed ??= tf.keep(tf.transpose(kernel));
          return tf.matMul(dLogits, transposed);
        },
        release: () => transposed?.dispose(),
      };
    }
    const table = this.embedTokens; // [vocab, hidden]
    if ((table as Partial<tf.Variable>).trainable) return null;
    return {
      vocabSize,
      logits: (x) => (transposesAreFree() ? tf.matMul(x, table, false, true) : tf.matMul(x, this.transposedEmbedding())),
      inputGradient: (dLogits) => tf.matMul(dLogits, table),
    };
  }

  /**
   * `embedTokensᵀ [hidden, vocab]`, kept after the first use. Only the plain wasm backend needs
   * it: the copy costs one more vocab × hidden table, but keeps the largest product of the step in
   * the layout XNNPACK runs fast.
   */
  private transposedEmbedding(): tf.Tensor2D {
    this.embedTokensTransposed ??= tf.keep(tf.transpose(this.embedTokens));
    return this.embedTokensTransposed;
  }

  /** Creates an empty KV cache for generation. */
  createCache(): KvCache {
    return { keys: [], values: [], length: 0 };
  }

  dispose(): void {
    this.embedTokens.dispose();
    this.positionEmbeddings?.dispose();
    for (const layer of this.linearLayers()) layer.dispose();
    const norms = [this.finalNorm, ...this.blocks.flatMap((b) => [b.inputNorm, b.postAttentionNorm])];
    for (const norm of norms) {
      norm.weight.dispose();
      norm.bias?.dispose();
    }
    this.ropeCache?.cos.dispose();
    this.ropeCache?.sin.dispose();
    this.embedTokensTransposed?.dispose();
    this.embedTokensTransposed = null;
  }

  private block(block: Block, layerIndex: number, hidden: tf.Tensor2D, step: StepShape): tf.Tensor2D {
    const attentionOut = this.attention(block, layerIndex, this.norm(block.inputNorm, hidden), step);
    const afterAttention = residualAdd(hidden, attentionOut);

    const mlpOut = this.mlp(block, this.norm(block.postAttentionNorm, afterAttention), step.context);
    return residualAdd(afterAttention, mlpOut);
  }

  private attention(block: Block, layerIndex: number, x: tf.Tensor2D, step: StepShape): tf.Tensor2D {
    const { batch, seq, context } = step;
    const { numHeads, numKeyValueHeads, headDim } = this.config;

    // The first block's input depends on frozen tables only (unless the embeddings train), so the
    // projections need not carry a gradient back to it.
    const projection = { inputGradient: layerIndex > 0 || isTrainable(this.embedTokens) };
    let q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D;
    if (block.attention.length === 1) {
      const qkv = block.attention[0].apply(x, context, projection); // [tokens, 3·hidden]
      [q, k, v] = tf.split(qkv, 3, 1) as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D];
    } else {
      [q, k, v] = block.attention.map((layer) => layer.apply(x, context, projection)) as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D];
    }

    let queries = splitHeads(q, batch, seq, numHeads, headDim); // [b, heads, seq, d]
    let keys = splitHeads(k, batch, seq, numKeyValueHeads, headDim); // [b, kvHeads, seq, d]
    let values = splitHeads(v, batch, seq, numKeyValueHeads, headDim);
    if (step.rope) {
      queries = rope(queries, step.rope.cos, step.rope.sin);
      keys = rope(keys, step.rope.cos, step.rope.sin);
    }
    if (step.cache) [keys, values] = appendToCache(step.cache, layerIndex, keys, values);

    // When gradients are recorded, attention runs as chunks with their own backward pass (one chunk
    // without a memory budget), which keeps q, k and v instead of the scores and probabilities.
    const chunk = step.attentionChunkSize && step.attentionChunkSize < seq ? step.attentionChunkSize : tf.engine().isTapeOn() && !step.cache ? seq : 0;
    const attended = chunk
      ? chunkedGroupedAttention(queries, keys, values, step.mask, numKeyValueHeads, chunk)
      : groupedAttention(queries, keys, values, step.mask, numKeyValueHeads); // [b, heads, seq, d]
    const merged = mergeHeads(attended);
    return block.outputProjection.apply(merged, context);
  }

  private mlp(block: Block, x: tf.Tensor2D, context: ForwardContext): tf.Tensor2D {
    if (this.config.family === 'gpt2') {
      const [fc, proj] = block.mlp;
      return proj.apply(geluTanh(fc.apply(x, context)), context);
    }
    const [gate, up, down] = block.mlp;
    const gated = swiglu(gate.apply(x, context), up.apply(x, context));
    return down.apply(gated, context);
  }

  private norm(norm: Norm, x: tf.Tensor2D): tf.Tensor2D {
    const eps = this.config.normEps;
    return norm.bias ? layerNorm(x, norm.weight, norm.bias, eps) : rmsNorm(x, norm.weight, eps);
  }

  /** cos/sin `[batch, 1, seq, headDim]` for the given positions, from a table kept between calls. */
  private ropeFor(positions: number[][], batch: number, seq: number): { cos: tf.Tensor; sin: tf.Tensor } {
    const maxPosition = Math.max(...positions.flat()) + 1;
    if (!this.ropeCache || this.ropeCache.length < maxPosition) {
      this.ropeCache?.cos.dispose();
      this.ropeCache?.sin.dispose();
      const length = Math.max(maxPosition, Math.min(this.config.maxPositionEmbeddings, 4096));
      const tables = ropeTables(length, this.config.headDim, this.inverseFrequencies!);
      this.ropeCache = {
        length,
        cos: tf.keep(tf.tensor2d(tables.cos, [length, this.config.headDim])),
        sin: tf.keep(tf.tensor2d(tables.sin, [length, this.config.headDim])),
      };
    }
    const index = tf.tensor1d(positions.flat().map((p) => Math.max(0, p)), 'int32');
    const shape: [number, number, number, number] = [batch, 1, seq, this.config.headDim];
    return {
      cos: tf.reshape(tf.gather(this.ropeCache.cos, index), shape),
      sin: tf.reshape(tf.gather(this.ropeCache.sin, index), shape),
    };
  }
}

interface StepShape {
  batch: number;
  seq: number;
  mask: tf.Tensor;
  rope: { cos: tf.Tensor; sin: tf.Tensor } | null;
  context: ForwardContext;
  cache?: KvCache;
  attentionChunkSize?: number;
}

/**
 * Scaled dot-product attention with grouped key/value heads. Query heads that share a key/value
 * head are folded into the sequence axis, so keys and values are never repeated in memory.
 */
export function groupedAttention(queries: tf.Tensor4D, keys: tf.Tensor4D, values: tf.Tensor4D, mask: tf.Tensor, kvHeads: number): tf.Tensor4D {
  const [batch, heads, seq, headDim] = queries.shape;
  const keyLength = keys.shape[2];
  const group = heads / kvHeads;

  const q = tf.reshape(queries, [batch * kvHeads, group * seq, headDim]);
  const k = tf.reshape(keys, [batch * kvHeads, keyLength, headDim]);
  const v = tf.reshape(values, [batch * kvHeads, keyLength, headDim]);

  const products = transposesAreFree() ? tf.matMul(q, k, false, true) : batchedMatMul(q, tf.transpose(k, [0, 2, 1]));
  const scores = tf.mul(products, 1 / Math.sqrt(headDim)); // [b·kv, group·seq, keys]
  const masked = tf.add(tf.reshape(scores, [batch, kvHeads, group, seq, keyLength]), mask);
  const probabilities = tf.softmax(tf.reshape(masked, [batch * kvHeads, group * seq, keyLength]));

  const out = batchedMatMul(probabilities, v); // [b·kv, group·seq, d]
  return tf.reshape(out, [batch, heads, seq, headDim]);
}

/**
 * Additive mask `[batch, 1, 1, seq, past + seq]`: causal, plus padding keys masked where
 * `attentionMask` (covering past and new positions, or only the new ones) is 0.
 */
export function buildAttentionMask(batch: number, seq: number, past: number, attentionMask?: number[][]): tf.Tensor {
  const keyLength = past + seq;
  const data = new Float32Array(batch * seq * keyLength);
  for (let b = 0; b < batch; b++) {
    const row = attentionMask?.[b];
    const offset = row && row.length === seq ? past : 0;
    for (let i = 0; i < seq; i++) {
      for (let j = 0; j < keyLength; j++) {
        const causal = j <= past + i;
        const padded = row !== undefined && j - offset >= 0 && row[j - offset] === 0;
        data[(b * seq + i) * keyLength + j] = causal && !padded ? 0 : MASKED;
      }
    }
  }
  return tf.tensor(data, [batch, 1, 1, seq, keyLength]);
}

function appendToCache(cache: KvCache, layer: number, keys: tf.Tensor4D, values: tf.Tensor4D): [tf.Tensor4D, tf.Tensor4D] {
  const previousKeys = cache.keys[layer];
  const previousValues = cache.values[layer];
  const allKeys = previousKeys ? tf.concat([previousKeys, keys], 2) : keys;
  const allValues = previousValues ? tf.concat([previousValues, values], 2) : values;
  previousKeys?.dispose();
  previousValues?.dispose();
  cache.keys[layer] = tf.keep(allKeys);
  cache.values[layer] = tf.keep(allValues);
  return [allKeys, allValues];
}

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

/**
 * GELU with the tanh approximation (`gelu_new` in transformers):
 * `0.5·x·(1 + tanh(c·(x + a·x³)))`. The custom gradient keeps only `x` for the backward pass
 * instead of every intermediate of the formula; its derivative is
 * `0.5·(1 + t) + 0.5·x·(1 − t²)·c·(1 + 3a·x²)` with `t = tanh(c·(x + a·x³))`. With the native
 * kernels both directions are one pass over the data.
 */
export const geluTanh = (x: tf.Tensor2D): tf.Tensor2D =>
  unaryCustomGrad((input, save) => {
    save([input]);
    if (nativeKernelsActive()) {
      return { value: nativeGeluTanh(input), gradFunc: (dy, [saved]) => nativeGeluTanhGrad(saved, dy) };
    }
    const t = tf.tanh(tf.mul(GELU_C, tf.add(input, tf.mul(GELU_A, cube(input)))));
    return {
      value: tf.mul(tf.mul(0.5, input), tf.add(1, t)),
      gradFunc: (dy, [saved]) =>
        tf.tidy(() => {
          const u = tf.tanh(tf.mul(GELU_C, tf.add(saved, tf.mul(GELU_A, cube(saved)))));
          const slope = tf.mul(GELU_C, tf.add(1, tf.mul(3 * GELU_A, tf.square(saved))));
          const derivative = tf.add(tf.mul(0.5, tf.add(1, u)), tf.mul(tf.mul(0.5, saved), tf.mul(tf.sub(1, tf.square(u)), slope)));
          return tf.mul(dy, derivative);
        }),
    };
  })(x) as tf.Tensor2D;

/** `x³` as two products: the wasm backend's Pow runs `std::pow` per element, several times slower. */
function cube(x: tf.Tensor): tf.Tensor {
  return tf.mul(tf.square(x), x);
}

/** SiLU `x·σ(x)`, keeping only `x` for the backward pass; derivative `σ(x)·(1 + x·(1 − σ(x)))`. */
export const silu = (x: tf.Tensor2D): tf.Tensor2D =>
  unaryCustomGrad((input, save) => {
    save([input]);
    if (nativeKernelsActive()) {
      return { value: nativeSilu(input), gradFunc: (dy, [saved]) => nativeSiluGrad(saved, dy) };
    }
    return {
      value: tf.mul(input, tf.sigmoid(input)),
      gradFunc: (dy, [saved]) =>
        tf.tidy(() => {
          const sigma = tf.sigmoid(saved);
          return tf.mul(dy, tf.mul(sigma, tf.add(1, tf.mul(saved, tf.sub(1, sigma)))));
        }),
    };
  })(x) as tf.Tensor2D;

function buildGpt2Block(config: ModelConfig, i: number, take: WeightTaker): Block {
  const p = `transformer.h.${i}`;
  const h = config.hiddenSize;
  return {
    inputNorm: { weight: take.vector(`${p}.ln_1.weight`, h), bias: take.vector(`${p}.ln_1.bias`, h) },
    postAttentionNorm: { weight: take.vector(`${p}.ln_2.weight`, h), bias: take.vector(`${p}.ln_2.bias`, h) },
    attention: [take.conv1d(`${p}.attn.c_attn`, h, 3 * h)],
    outputProjection: take.conv1d(`${p}.attn.c_proj`, h, h),
    mlp: [take.conv1d(`${p}.mlp.c_fc`, h, config.intermediateSize), take.conv1d(`${p}.mlp.c_proj`, config.intermediateSize, h)],
  };
}

function buildLlamaBlock(config: ModelConfig, i: number, take: WeightTaker): Block {
  const p = `model.layers.${i}`;
  const h = config.hiddenSize;
  const qOut = config.numHeads * config.headDim;
  const kvOut = config.numKeyValueHeads * config.headDim;
  return {
    inputNorm: { weight: take.vector(`${p}.input_layernorm.weight`, h), bias: null },
    postAttentionNorm: { weight: take.vector(`${p}.post_attention_layernorm.weight`, h), bias: null },
    attention: [
      take.linear(`${p}.self_attn.q_proj`, h, qOut, config.qkvBias),
      take.linear(`${p}.self_attn.k_proj`, h, kvOut, config.qkvBias),
      take.linear(`${p}.self_attn.v_proj`, h, kvOut, config.qkvBias),
    ],
    outputProjection: take.linear(`${p}.self_attn.o_proj`, qOut, h, config.outputBias),
    mlp: [
      take.linear(`${p}.mlp.gate_proj`, h, config.intermediateSize, config.mlpBias),
      take.linear(`${p}.mlp.up_proj`, h, config.intermediateSize, config.mlpBias),
      take.linear(`${p}.mlp.down_proj`, config.intermediateSize, h, config.mlpBias),
    ],
  };
}

type WeightTaker = ReturnType<typeof weightTaker>;

/**
 * Reads weights by name and checks their shapes. GPT-2 checkpoints saved by the original
 * scripts omit the `transformer.` prefix, so both spellings are accepted.
 */
function weightTaker(weights: Map<string, HostTensor>, source: string, trainable: boolean, quantize?: QuantSettings) {
  const constant = <T extends tf.Tensor>(tensor: T): T => {
    if (!trainable) return tensor;
    const variable = tf.variable(tensor, true) as unknown as T;
    tensor.dispose();
    return variable;
  };
  const lookup = (name: string): HostTensor | undefined => weights.get(name) ?? (name.startsWith('transformer.') ? weights.get(name.slice('transformer.'.length)) : undefined);
  const get = (name: string, shape: number[]): HostTensor => {
    const tensor = lookup(name);
    if (!tensor) {
      throw new StudioError('MODEL_FILES_MISSING', `${source}: weight "${name}" is missing from the checkpoint.`, 'The weights do not match config.json; re-download the model.');
    }
    if (tensor.shape.length !== shape.length || tensor.shape.some((d, i) => d !== shape[i])) {
      throw new StudioError('SHAPE_MISMATCH', `${source}: weight "${name}" has shape [${tensor.shape}] but config.json implies [${shape}].`, 'The weights do not match config.json; re-download the model.');
    }
    return tensor;
  };
  return {
    has: (name: string) => lookup(name) !== undefined,
    vector: (name: string, size: number) => constant(tf.tensor1d(get(name, [size]).data)),
    matrix: (name: string, shape: [number, number]) => constant(tf.tensor2d(get(name, shape).data, shape)),
    /** `nn.Linear`: checkpoint `[out, in]`, stored transposed, or quantized in that layout. */
    linear: (name: string, inFeatures: number, outFeatures: number, bias: boolean, quantizable = true): Linear => {
      const host = get(`${name}.weight`, [outFeatures, inFeatures]);
      const biasTensor = bias ? constant(tf.tensor1d(get(`${name}.bias`, [outFeatures]).data)) : null;
      if (quantize && quantizable && !trainable) {
        const weight = new QuantizedWeight(host.data, outFeatures, inFeatures, quantize);
        return Linear.quantized(name, weight, quantizedProduct(weight), biasTensor, false);
      }
      const weight = tf.tensor2d(host.data, [outFeatures, inFeatures]);
      const kernel = constant(tf.transpose(weight));
      weight.dispose();
      return new Linear(name, kernel, biasTensor, false);
    },
    /** GPT-2 `Conv1D`: checkpoint `[in, out]`, stored as is, or transposed on the host and quantized. */
    conv1d: (name: string, inFeatures: number, outFeatures: number): Linear => {
      const host = get(`${name}.weight`, [inFeatures, outFeatures]);
      const biasTensor = constant(tf.tensor1d(get(`${name}.bias`, [outFeatures]).data));
      if (quantize && !trainable) {
        const weight = new QuantizedWeight(transposeOnHost(host.data, inFeatures, outFeatures), outFeatures, inFeatures, quantize);
        return Linear.quantized(name, weight, quantizedProduct(weight), biasTensor, true);
      }
      return new Linear(name, constant(tf.tensor2d(host.data, [inFeatures, outFeatures])), biasTensor, true);
    },
  };
}

/** Row-major `[rows, cols]` → `[cols, rows]`. */
function transposeOnHost(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  }
  return out;
}

/**
 * Looks up the embedding rows for `ids`. The gradient, taken only when the table is trainable,
 * is a ScatterNd that sums repeated ids, because tfjs's own gather gradient needs a kernel the
 * wasm backend lacks.
 */
function embeddingLookup(table: tf.Tensor2D, ids: tf.Tensor1D): tf.Tensor2D {
  const lookup = unaryCustomGrad((input, save) => {
    save([ids]);
    return {
      value: tf.gather(input, ids),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.scatterND(tf.reshape(saved[0], [-1, 1]), dy, table.shape),
    };
  });
  return lookup(table) as tf.Tensor2D;
}

/**
 * Collects every base weight under its checkpoint name and layout (`[out, in]` for nn.Linear, `[in, out]`
 * for GPT-2's Conv1D), for writing a Hugging Face folder. LoRA tensors are not included: merge
 * first to bake them in.
 */
export function checkpointTensors(model: CausalLM): Record<string, TensorToWrite> {
  const out = new Map<string, tf.Tensor>();
  const created: tf.Tensor[] = [];
  const gpt2 = model.config.family === 'gpt2';
  out.set(gpt2 ? 'transformer.wte.weight' : 'model.embed_tokens.weight', model.embedTokens);
  if (model.positionEmbeddings) out.set('transformer.wpe.weight', model.positionEmbeddings);
  model.blocks.forEach((block, i) => {
    const prefix = gpt2 ? `transformer.h.${i}` : `model.layers.${i}`;
    const norms: [string, Norm][] = gpt2
      ? [['ln_1', block.inputNorm], ['ln_2', block.postAttentionNorm]]
      : [['input_layernorm', block.inputNorm], ['post_attention_layernorm', block.postAttentionNorm]];
    for (const [name, norm] of norms) {
      out.set(`${prefix}.${name}.weight`, norm.weight);
      if (norm.bias) out.set(`${prefix}.${name}.bias`, norm.bias);
    }
  });
  out.set(gpt2 ? 'transformer.ln_f.weight' : 'model.norm.weight', model.finalNorm.weight);
  if (model.finalNorm.bias) out.set('transformer.ln_f.bias', model.finalNorm.bias);
  for (const layer of model.linearLayers()) {
    const weight = layer.checkpointWeight();
    created.push(weight);
    out.set(`${layer.name}.weight`, weight);
    if (layer.bias) out.set(`${layer.name}.bias`, layer.bias);
  }
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, tensor] of out) tensors[name] = { dtype: 'F32', shape: tensor.shape, data: tensor.dataSync() as Float32Array };
  for (const tensor of created) tensor.dispose();
  return tensors;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/**
 * Learned position embeddings have one row per position, so a position at or past their count
 * has nothing to look up.
 *
 * @throws StudioError INVALID_ARGUMENT naming the position and the table size.
 */
function checkLearnedPositions(positions: readonly (readonly number[])[], count: number): void {
  let highest = -1;
  for (const row of positions) for (const position of row) if (position > highest) highest = position;
  if (highest < count) return;
  throw new StudioError(
    'INVALID_ARGUMENT',
    `The sequence reaches ${highest + 1} tokens, but the model has only ${count} learned positions (n_positions).`,
    `Lower max sequence length (or prompt plus new tokens) to ${count} or less.`,
  );
}

function isTrainable(tensor: tf.Tensor): boolean {
  return (tensor as Partial<tf.Variable>).trainable === true;
}
