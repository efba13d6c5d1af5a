/**
 * Text generation with a KV cache: greedy (temperature 0) or temperature + top-p (nucleus)
 * sampling, stopping at EOS or after `maxNewTokens`.
 */
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../shared/errors';
import type { CausalLM } from './models/transformer';
import { SeededRandom } from './train/random';

export interface GenerateOptions {
  maxNewTokens?: number;
  /** 0 picks the most likely token (greedy). Default 0. */
  temperature?: number;
  /** Samples from the smallest set of tokens whose probability sums to at least topP. Default 1. */
  topP?: number;
  seed?: number;
  /** Token ids that end generation (not included in the output). */
  eosTokenIds?: number[];
}

export interface GenerateResult {
  /** New token ids only. */
  tokenIds: number[];
  finishReason: 'eos' | 'length';
}

/** Generates a continuation of `promptIds`. */
export function generate(model: CausalLM, promptIds: number[], options: GenerateOptions = {}): GenerateResult {
  const maxNewTokens = options.maxNewTokens ?? 64;
  const temperature = options.temperature ?? 0;
  const topP = options.topP ?? 1;
  validateOptions(promptIds, maxNewTokens, temperature, topP, model.config.vocabSize);
  const random = new SeededRandom(options.seed ?? 0);
  const eos = new Set(options.eosTokenIds ?? []);
  const limit = model.config.family === 'gpt2' ? model.config.maxPositionEmbeddings : Number.POSITIVE_INFINITY;

  const cache = model.createCache();
  const tokenIds: number[] = [];
  let finishReason: GenerateResult['finishReason'] = 'length';
  try {
    let input = promptIds;
    for (let i = 0; i < maxNewTokens; i++) {
      if (cache.length + input.length > limit) break;
      const logits = tf.tidy(() => {
        const hidden = model.hiddenStates([input], { cache });
        const last = tf.slice(hidden, [input.length - 1, 0], [1, -1]);
        return model.logits(last);
      });
      const values = logits.dataSync() as Float32Array;
      logits.dispose();
      const next = temperature === 0 ? argmax(values) : sampleTopP(values, temperature, topP, random);
      if (eos.has(next)) {
        finishReason = 'eos';
        break;
      }
      tokenIds.push(next);
      input = [next];
    }
  } finally {
    for (const tensor of [...cache.keys, ...cache.values]) tensor.dispose();
  }
  return { tokenIds, finishReason };
}

function validateOptions(promptIds: number[], maxNewTokens: number, temperature: number, topP: number, vocabSize: number): void {
  if (promptIds.length === 0) {
    throw new StudioError('INVALID_ARGUMENT', 'The prompt is empty.', 'Give a prompt of at least one token.');
  }
  const bad = promptIds.find((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
  if (bad !== undefined) {
    throw new StudioError('INVALID_ARGUMENT', `Prompt token id ${bad} is outside the vocabulary (0 to ${vocabSize - 1}).`, 'Use ids from this model\'s tokenizer.');
  }
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
    throw new StudioError('INVALID_ARGUMENT', `max_new_tokens must be a positive integer. Received: ${maxNewTokens}.`, 'Use e.g. 64.');
  }
  if (!(temperature >= 0) || !Number.isFinite(temperature)) {
    throw new StudioError('INVALID_ARGUMENT', `temperature must be ≥ 0. Received: ${temperature}.`, 'Use 0 for greedy decoding, or 0.7 to 1.0 for sampling.');
  }
  if (!(topP > 0 && topP <= 1)) {
    throw new StudioError('INVALID_ARGUMENT', `top_p must be in (0, 1]. Received: ${topP}.`, 'Use e.g. 0.9, or 1 to turn it off.');
  }
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Samples from softmax(logits / temperature) restricted to the top-p nucleus. */
export function sampleTopP(logits: Float32Array, temperature: number, topP: number, random: SeededRandom): number {
  let max = -Infinity;
  for (const value of logits) if (value > max) max = value;
  const probabilities = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    probabilities[i] = Math.exp((logits[i] - max) / temperature);
    sum += probabilities[i];
  }
  const order = Array.from(probabilities.keys()).sort((a, b) => probabilities[b] - probabilities[a]);
  const nucleus: number[] = [];
  let cumulative = 0;
  for (const index of order) {
    nucleus.push(index);
    cumulative += probabilities[index] / sum;
    if (cumulative >= topP) break;
  }
  const nucleusSum = nucleus.reduce((total, index) => total + probabilities[index], 0);
  let threshold = random.next() * nucleusSum;
  for (const index of nucleus) {
    threshold -= probabilities[index];
    if (threshold <= 0) return index;
  }
  return nucleus[nucleus.length - 1];
}
