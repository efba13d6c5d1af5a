/**
 * Loading a Hugging Face model folder into a CausalLM, and the loss of a batch.
 */
import * as tf from '@tensorflow/tfjs-core';
import { readGenerationConfig, readModelConfig, locateModelFiles, readModelWeights } from './loader';
import { shiftLabels } from './loss';
import { chunkedHeadLoss } from './head-loss';
import { gatherRows, softmaxCrossEntropy } from './ops';
import { CausalLM, type ForwardOptions } from './transformer';
import type { ModelConfig } from './config';
import type { QuantSettings } from '../quant/qlinear';

export { CausalLM } from './transformer';
export type { ModelConfig } from './config';

export interface LoadedModel {
  model: CausalLM;
  config: ModelConfig;
  generationConfig?: Record<string, unknown>;
  dir: string;
}

/**
 * Loads config and weights from a model folder; errors name the folder and file. With `quantize`
 * the blocks' linear layers are quantized on the host as they load (QLoRA), so the backend never
 * holds their float32 weights: a model too large for memory in float32 can still load.
 */
export function loadModel(dir: string, options: { quantize?: QuantSettings } = {}): LoadedModel {
  const config = readModelConfig(dir);
  const files = locateModelFiles(dir);
  // GPT-2 checkpoints carry causal-mask buffers (`attn.bias`, `attn.masked_bias`) that are not weights.
  const weights = readModelWeights(files, (name) => !/\.attn\.(masked_)?bias$/.test(name));
  const model = new CausalLM(config, weights, dir, { quantize: options.quantize });
  return { model, config, generationConfig: readGenerationConfig(dir), dir };
}

export interface Batch {
  inputIds: number[][];
  labels: number[][];
  attentionMask?: number[][];
}

/**
 * Mean cross-entropy over the shifted labels that are not -100. Only the positions with a target
 * go through the LM head, which saves most of its cost when prompts are masked. A frozen head
 * runs chunk by chunk without keeping the logits (`head-loss.ts`).
 */
export function batchLoss(model: CausalLM, batch: Batch, options: ForwardOptions = {}): tf.Scalar {
  const { rows, targets } = shiftLabels(batch.labels);
  const hidden = model.hiddenStates(batch.inputIds, { ...options, attentionMask: batch.attentionMask });
  if (rows.length === 0) return tf.mul(tf.sum(hidden), 0) as tf.Scalar;
  const selected = gatherRows(hidden, rows);
  const head = model.frozenHead();
  if (head) return chunkedHeadLoss(selected, targets, head);
  return softmaxCrossEntropy(model.logits(selected, options.context), targets);
}
