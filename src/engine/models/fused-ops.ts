/**
 * Normalization, rotary embedding and the SwiGLU gate as single differentiable operations.
 *
 * tfjs keeps every tensor a forward pass creates until the backward pass ends, so a norm written
 * as six element-wise operations keeps three hidden-sized tensors per token, and RoPE keeps six.
 * Each function here computes its value inside a tidy and states its gradient by hand, keeping
 * only its inputs and a per-token scalar. The formulas:
 *
 * - RMSNorm `y = x·r·w`, `r = (mean(x²) + ε)^-½`, `g = dy·w`:
 *   `dx = r·g − x·r³·mean(g·x)`, `dw = Σ_tokens dy·x·r`.
 * - LayerNorm `y = x̂·w + b`, `x̂ = (x − μ)·r`, `r = (var(x) + ε)^-½`:
 *   `dx = r·(g − mean(g) − x̂·mean(g·x̂))`, `dw = Σ dy·x̂`, `db = Σ dy`.
 * - RoPE `y = x·cos + rot(x)·sin` with `rot([x₁, x₂]) = [−x₂, x₁]`:
 *   `dx = dy·cos + rotᵀ(dy·sin)` with `rotᵀ([z₁, z₂]) = [z₂, −z₁]`.
 * - SwiGLU `y = silu(gate)·up`: `dgate = dy·up·silu′(gate)`, `dup = dy·silu(gate)`.
 */
import * as tf from '@tensorflow/tfjs-core';
import { nativeKernelsActive, nativeSilu, nativeSiluGrad } from '../backend/native-kernels';

type Save = tf.GradSaveFunc;

/** `tf.customGrad` over several tensors, with the argument types tfjs leaves loose. */
function customOp(f: (inputs: tf.Tensor[], save: Save) => { value: tf.Tensor; gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[] }): (...inputs: tf.Tensor[]) => tf.Tensor {
  const wrapped = tf.customGrad((...args: Array<tf.Tensor | Save>) => {
    const save = args.pop() as Save;
    const { value, gradFunc } = f(args as tf.Tensor[], save);
    // The gradient runs outside any tidy of the engine, so it frees its own temporaries.
    return { value, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.tidy(() => gradFunc(dy, saved)) };
  });
  return (...inputs) => wrapped(...inputs);
}

/**
 * Sums `[tokens, h]` over the tokens into `[h]`: the gradient of a norm's weight or bias. When that
 * parameter does not train (LoRA), returns zeros instead, because the wasm backend's Sum over the
 * first axis transposes its input first (317 ms of a 6.8 s full-depth GPT-2 step in
 * `npm run bench -- --scenario gpt2-124m --profile`).
 */
function parameterGradient(parameter: tf.Tensor, perToken: () => tf.Tensor): tf.Tensor {
  return (parameter as Partial<tf.Variable>).trainable === true ? tf.sum(perToken(), 0) : tf.zerosLike(parameter);
}

/** RMSNorm of `x [tokens, h]` with weight `w [h]`. */
export function rmsNorm(x: tf.Tensor2D, weight: tf.Tensor1D, eps: number): tf.Tensor2D {
  const op = customOp(([input, w], save) => {
    const { value, r } = tf.tidy(() => {
      const scale = tf.rsqrt(tf.add(tf.mean(tf.square(input), -1, true), eps)); // [tokens, 1]
      return { value: tf.mul(tf.mul(input, scale), w), r: scale };
    });
    save([input, w, r]);
    return {
      value,
      gradFunc: (dy, [savedInput, savedWeight, savedR]) => {
        const g = tf.mul(dy, savedWeight);
        const projection = tf.mean(tf.mul(g, savedInput), -1, true);
        const dx = tf.sub(tf.mul(g, savedR), tf.mul(savedInput, tf.mul(tf.pow(savedR, 3), projection)));
        const dw = parameterGradient(w, () => tf.mul(dy, tf.mul(savedInput, savedR)));
        return [dx, dw];
      },
    };
  });
  return op(x, weight) as tf.Tensor2D;
}

/** LayerNorm of `x [tokens, h]` with weight and bias `[h]`. */
export function layerNorm(x: tf.Tensor2D, weight: tf.Tensor1D, bias: tf.Tensor1D, eps: number): tf.Tensor2D {
  const op = customOp(([input, w, b], save) => {
    const { value, mean, r } = tf.tidy(() => {
      const moments = tf.moments(input, -1, true);
      const scale = tf.rsqrt(tf.add(moments.variance, eps));
      const normalized = tf.mul(tf.sub(input, moments.mean), scale);
      return { value: tf.add(tf.mul(normalized, w), b), mean: moments.mean, r: scale };
    });
    save([input, w, mean, r]);
    return {
      value,
      gradFunc: (dy, [savedInput, savedWeight, savedMean, savedR]) => {
        const normalized = tf.mul(tf.sub(savedInput, savedMean), savedR);
        const g = tf.mul(dy, savedWeight);
        const centered = tf.sub(g, tf.mean(g, -1, true));
        const dx = tf.mul(savedR, tf.sub(centered, tf.mul(normalized, tf.mean(tf.mul(g, normalized), -1, true))));
        return [dx, parameterGradient(w, () => tf.mul(dy, normalized)), parameterGradient(b, () => dy)];
      },
    };
  });
  return op(x, weight, bias) as tf.Tensor2D;
}

/** Rotary embedding of `x [b, heads, seq, d]` with constant `cos`, `sin` `[b, 1, seq, d]`. */
export function rope(x: tf.Tensor4D, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor4D {
  const half = x.shape[3] / 2;
  // cos and sin are saved too: tfjs frees the forward pass's tensors that no gradient saved.
  const op = customOp(([input], save) => {
    save([cos, sin]);
    return {
      value: tf.tidy(() => {
        const [x1, x2] = tf.split(input, [half, half], 3);
        return tf.add(tf.mul(input, cos), tf.mul(tf.concat([tf.neg(x2), x1], 3), sin));
      }),
      gradFunc: (dy, [savedCos, savedSin]) => {
        const [z1, z2] = tf.split(tf.mul(dy, savedSin), [half, half], 3);
        return [tf.add(tf.mul(dy, savedCos), tf.concat([z2, tf.neg(z1)], 3))];
      },
    };
  });
  return op(x) as tf.Tensor4D;
}

/** `silu(gate)·up` for two `[tokens, intermediate]` tensors. */
export function swiglu(gate: tf.Tensor2D, up: tf.Tensor2D): tf.Tensor2D {
  const native = nativeKernelsActive();
  const siluOf = (x: tf.Tensor) => (native ? nativeSilu(x) : tf.mul(x, tf.sigmoid(x)));
  const op = customOp(([g, u], save) => {
    save([g, u]);
    return {
      value: tf.tidy(() => tf.mul(siluOf(g), u)),
      gradFunc: (dy, [savedGate, savedUp]) => {
        const upstream = tf.mul(dy, savedUp);
        let dGate: tf.Tensor;
        if (native) dGate = nativeSiluGrad(savedGate, upstream);
        else {
          const sigma = tf.sigmoid(savedGate);
          dGate = tf.mul(upstream, tf.mul(sigma, tf.add(1, tf.mul(savedGate, tf.sub(1, sigma)))));
        }
        return [dGate, tf.mul(dy, siluOf(savedGate))];
      },
    };
  });
  return op(gate, up) as tf.Tensor2D;
}

/**
 * `a + b` for two tensors of one shape, saving nothing: the gradient is `dy` for both. tfjs's Add
 * saves both inputs (to reduce a broadcast gradient), which keeps each residual branch's output
 * alive until the backward pass ends.
 */
export function residualAdd(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  const op = customOp(([left, right]) => ({
    value: tf.add(left, right),
    gradFunc: (dy) => [dy.clone(), dy.clone()],
  }));
  return op(a, b) as tf.Tensor2D;
}

/**
 * `[tokens, heads·d] → [batch, heads, seq, d]`, saving nothing (the gradient is the inverse
 * rearrangement). tfjs's Reshape saves its input, which would keep the projection's output alive.
 */
export function splitHeads(x: tf.Tensor2D, batch: number, seq: number, heads: number, headDim: number): tf.Tensor4D {
  const op = customOp(([input]) => ({
    value: tf.tidy(() => tf.transpose(tf.reshape(input, [batch, seq, heads, headDim]), [0, 2, 1, 3])),
    gradFunc: (dy) => [tf.reshape(tf.transpose(dy, [0, 2, 1, 3]), [batch * seq, heads * headDim])],
  }));
  return op(x) as tf.Tensor4D;
}

/** `[batch, heads, seq, d] → [tokens, heads·d]`, the inverse of `splitHeads`, saving nothing. */
export function mergeHeads(x: tf.Tensor4D): tf.Tensor2D {
  const [batch, heads, seq, headDim] = x.shape;
  const op = customOp(([input]) => ({
    value: tf.tidy(() => tf.reshape(tf.transpose(input, [0, 2, 1, 3]), [batch * seq, heads * headDim])),
    gradFunc: (dy) => [tf.transpose(tf.reshape(dy, [batch, seq, heads, headDim]), [0, 2, 1, 3])],
  }));
  return op(x) as tf.Tensor2D;
}
