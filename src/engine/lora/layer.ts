/**
 * The LoRA update of one linear layer, with PEFT's semantics so adapters move between this
 * engine and PEFT unchanged:
 *
 *     y = base(x) + (dropout(x) · lora_Aᵀ · lora_Bᵀ) · scaling
 *
 * `lora_A` is `[r, in_features]`, `lora_B` is `[out_features, r]`, exactly as PEFT stores them,
 * and `scaling = lora_alpha / r` (or `lora_alpha / √r` with rsLoRA). Both stay float32 even when
 * the base weight is quantized: they are small, and the optimizer's updates to them are too fine
 * for a 4-bit grid.
 */
import * as tf from '@tensorflow/tfjs-core';
import { loraProduct } from '../models/matmul';

export interface LoraWeights {
  /** `[r, in_features]`, trainable. */
  loraA: tf.Variable<tf.Rank.R2>;
  /** `[out_features, r]`, trainable. */
  loraB: tf.Variable<tf.Rank.R2>;
  rank: number;
  loraAlpha: number;
  scaling: number;
  dropout: number;
}

/** `lora_alpha / r`, or `lora_alpha / √r` with rsLoRA (Kalajdzievski, 2023). */
export function loraScaling(loraAlpha: number, rank: number, useRslora: boolean): number {
  return useRslora ? loraAlpha / Math.sqrt(rank) : loraAlpha / rank;
}

/**
 * The LoRA term for `x [tokens, in_features]`: `[tokens, out_features]`. Dropout applies only in
 * training, with a seed per call so a run is reproducible.
 */
export function loraDelta(x: tf.Tensor2D, lora: LoraWeights, training: boolean, dropoutSeed?: number): tf.Tensor2D {
  const input = training && lora.dropout > 0 ? tf.dropout(x, lora.dropout, undefined, dropoutSeed) : x;
  return loraProduct(input, lora.loraA, lora.loraB, lora.scaling);
}

/** `scaling · B · A` as `[out_features, in_features]`: the weight change a merge adds. */
export function loraDeltaWeight(lora: LoraWeights): tf.Tensor2D {
  return tf.tidy(() => tf.mul(tf.matMul(lora.loraB, lora.loraA), lora.scaling));
}
