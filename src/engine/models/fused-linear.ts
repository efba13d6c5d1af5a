/**
 * A linear layer with a frozen base weight, its bias and its LoRA term as one differentiable
 * operation:
 *
 *     y = x · W + b + (dropout(x) · Aᵀ) · Bᵀ · scaling
 *
 * tfjs keeps what each operation saves for its gradient until the backward pass ends. Written as
 * separate operations, this layer would keep the base product, the sum with the bias, the dropout
 * noise and its intermediates, the dropped input, the LoRA up-projection and its scaled copy.
 * As one operation it keeps its output, the dropout mask (input-sized bools, only with dropout)
 * and the rank-sized down-projection. The backward pass computes
 *
 *     dUp = dy · scaling,  dDown = dUp · B,  dB = dUpᵀ · down,  dA = dDownᵀ · dropout(x),
 *     dx = dy · Wᵀ + (dDown · A) ⊙ mask / keep
 *
 * The dropout mask matches the one `tf.dropout` draws with the same seed, so results do not
 * depend on which form ran.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LoraWeights } from '../lora/layer';
import { transposesAreFree } from './matmul';

/** A frozen base weight as its two products. */
export interface FrozenProduct {
  /** `x [tokens, in] → x · W [tokens, out]`. */
  forward(x: tf.Tensor2D): tf.Tensor2D;
  /** `dy [tokens, out] → dy · Wᵀ [tokens, in]`. */
  inputGradient(dy: tf.Tensor2D): tf.Tensor2D;
}

export interface FusedLinearOptions {
  base: FrozenProduct;
  bias: tf.Tensor1D | null;
  lora: LoraWeights | null;
  /** Seed of the LoRA dropout; undefined means no dropout (inference, or rate 0). */
  dropoutSeed?: number;
  /**
   * False when nothing upstream of `x` trains, so its gradient is never used (the first block's
   * projections in LoRA training). The backward pass then returns zeros for `x`.
   */
  inputGradient: boolean;
}

type SaveFunction = tf.GradSaveFunc;

/** `x · W + b + LoRA(x)` for `x [tokens, in]`, keeping only what its gradient needs. */
export function fusedLinear(x: tf.Tensor2D, options: FusedLinearOptions): tf.Tensor2D {
  const { base, bias, lora } = options;
  const dropout = lora && options.dropoutSeed !== undefined && lora.dropout > 0 ? { rate: lora.dropout, seed: options.dropoutSeed } : null;
  const free = transposesAreFree();

  const op = tf.customGrad((...args: Array<tf.Tensor | SaveFunction>) => {
    const save = args.pop() as SaveFunction;
    const [input, a, b] = args as [tf.Tensor2D, tf.Tensor2D | undefined, tf.Tensor2D | undefined];

    const forwardResults = tf.tidy(() => {
      let y: tf.Tensor = base.forward(input);
      if (bias) y = tf.add(y, bias);
      if (!a || !b || !lora) return { value: y };
      const keep = dropout ? keptMask(input.shape, dropout.rate, dropout.seed) : null;
      const dropped = keep && dropout ? (tf.mul(input, multiplier(keep, dropout.rate)) as tf.Tensor2D) : input;
      const lowRank = free ? tf.matMul(dropped, a, false, true) : tf.matMul(dropped, tf.transpose(a)); // [tokens, r]
      const up = free ? tf.matMul(lowRank, b, false, true) : tf.matMul(lowRank, tf.transpose(b)); // [tokens, out]
      const value = tf.add(y, tf.mul(up, lora.scaling));
      return keep ? { value, down: lowRank, mask: keep } : { value, down: lowRank };
    }) as { value: tf.Tensor; down?: tf.Tensor; mask?: tf.Tensor };
    const { value, down, mask } = forwardResults;
    save(a && b ? [input, a, b, down!, ...(mask ? [mask] : [])] : [input]);

    return {
      value,
      // Runs outside any tidy of the engine, so it frees its own temporaries.
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const upstream = dy as tf.Tensor2D;
          let dx: tf.Tensor2D = options.inputGradient ? base.inputGradient(upstream) : (tf.zerosLike(saved[0]) as tf.Tensor2D);
          if (!lora || saved.length < 4) return [dx];
          const [savedInput, savedA, savedB, savedDown, savedMask] = saved as tf.Tensor2D[];
          const dUp = tf.mul(upstream, lora.scaling) as tf.Tensor2D; // [tokens, out]
          const dDown = tf.matMul(dUp, savedB); // [tokens, r]
          const keepMultiplier = savedMask && dropout ? multiplier(savedMask, dropout.rate) : null;
          const dropped = keepMultiplier ? (tf.mul(savedInput, keepMultiplier) as tf.Tensor2D) : savedInput;
          const dB = free ? tf.matMul(dUp, savedDown, true, false) : tf.transpose(tf.matMul(tf.transpose(savedDown), dUp)); // [out, r]
          const dA = free ? tf.matMul(dDown, dropped, true, false) : tf.matMul(tf.transpose(dDown), dropped); // [r, in]
          if (!options.inputGradient) return [dx, dA, dB];
          const dDropped = tf.matMul(dDown, savedA); // [tokens, in]
          dx = tf.add(dx, keepMultiplier ? tf.mul(dDropped, keepMultiplier) : dDropped) as tf.Tensor2D;
          return [dx, dA, dB];
        }),
    };
  });
  const inputs: tf.Tensor[] = lora ? [x, lora.loraA, lora.loraB] : [x];
  return op(...inputs) as tf.Tensor2D;
}

/**
 * Draws which inputs dropout keeps, as a bool tensor (one byte per value instead of four).
 * `tf.dropout` multiplies by `floor(uniform + keep) / keep`, and `floor(y)` is 1 exactly when
 * `y ≥ 1` for `y` in `[keep, 1 + keep)`, so the same seed gives the same mask.
 */
function keptMask(shape: number[], rate: number, seed: number): tf.Tensor {
  return tf.greaterEqual(tf.add(tf.randomUniform(shape, 0, 1, 'float32', seed), 1 - rate), 1);
}

/** `mask / keep` as float32: the factor `tf.dropout` applies. */
function multiplier(mask: tf.Tensor, rate: number): tf.Tensor {
  return tf.div(tf.cast(mask, 'float32'), 1 - rate);
}
