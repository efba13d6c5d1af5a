/**
 * Matrix products written so every product, forward and backward, is a plain `[m, k] × [k, n]`.
 *
 * tfjs-backend-wasm 4.x hands a BatchMatMul to XNNPACK only when neither operand is transposed
 * and the batch size is 1; every other form (`transposeA`, `transposeB`, batch > 1) runs a scalar
 * loop about ten times slower (`npm run bench -- matmul` prints the table). tfjs's own gradient
 * of `matMul(a, b)` is `dy · bᵀ` and `aᵀ · dy`, both in the slow form. The functions here
 * transpose the smaller operand explicitly (a copy that costs far less than the product) and
 * state their gradients the same way.
 *
 * Every other backend, and the wasm backend with the native matmul (`backend/native-matmul.ts`),
 * multiplies transposed and batched operands at full speed. There the copies are only cost, so
 * `transposesAreFree()` switches the functions to transpose flags and batched products.
 */
import * as tf from '@tensorflow/tfjs-core';
import { nativeMatMulStatus } from '../backend/native-matmul';

/** True unless the backend is wasm without the native matmul, whose XNNPACK path needs plain layouts. */
export function transposesAreFree(): boolean {
  return tf.getBackend() !== 'wasm' || nativeMatMulStatus()?.enabled === true;
}

type GradFunction = (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor | tf.Tensor[];

/** `tf.customGrad` with the argument types tfjs leaves loose. */
function customGrad(f: (inputs: tf.Tensor[], save: tf.GradSaveFunc) => { value: tf.Tensor; gradFunc: GradFunction }): (...inputs: tf.Tensor[]) => tf.Tensor {
  const wrapped = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args.pop() as tf.GradSaveFunc;
    return f(args as tf.Tensor[], save);
  });
  return (...inputs) => wrapped(...inputs);
}

/**
 * `x [tokens, in] · kernel [in, out]` for a kernel that is not trained: the gradient flows to
 * `x` only, as `dy · kernelᵀ`. `transposed` returns `kernelᵀ [out, in]` (kept by the caller, or
 * built per call and disposed by the gradient's tidy).
 */
export function frozenMatMul(x: tf.Tensor2D, kernel: tf.Tensor2D, transposed: () => tf.Tensor2D): tf.Tensor2D {
  const product = customGrad(([input]) => ({
    value: tf.matMul(input as tf.Tensor2D, kernel),
    // The tidy frees the transposed copy at once; tfjs otherwise keeps every tensor a gradient
    // creates until the whole backward pass ends.
    gradFunc: (dy) => tf.tidy(() => (transposesAreFree() ? tf.matMul(dy as tf.Tensor2D, kernel, false, true) : tf.matMul(dy as tf.Tensor2D, transposed()))),
  }));
  return product(x) as tf.Tensor2D;
}

/** `x [tokens, in] · weightᵀ` for a frozen `weight [out, in]`, with the gradient `dy · weight` for `x`. */
export function frozenMatMulTransposed(x: tf.Tensor2D, weight: tf.Tensor2D): tf.Tensor2D {
  const product = customGrad(([input]) => ({
    value: tf.matMul(input as tf.Tensor2D, weight, false, true),
    gradFunc: (dy) => tf.matMul(dy as tf.Tensor2D, weight),
  }));
  return product(x) as tf.Tensor2D;
}

/**
 * Computes the LoRA product `(x · Aᵀ) · Bᵀ · scaling` for `x [tokens, in]`, `A [r, in]`,
 * `B [out, r]`, with gradients for all three. Only `r`-sized tensors are transposed.
 */
export function loraProduct(x: tf.Tensor, loraA: tf.Tensor2D, loraB: tf.Tensor2D, scaling: number): tf.Tensor2D {
  const free = transposesAreFree();
  const product = customGrad(([input, a, b], save) => {
    const down = free ? tf.matMul(input as tf.Tensor2D, a as tf.Tensor2D, false, true) : tf.matMul(input as tf.Tensor2D, tf.transpose(a as tf.Tensor2D)); // [tokens, r]
    const up = free ? tf.matMul(down, b as tf.Tensor2D, false, true) : tf.matMul(down, tf.transpose(b as tf.Tensor2D)); // [tokens, out]
    save([input, a, b, down]);
    return {
      value: tf.mul(up, scaling),
      gradFunc: (dy, saved) => {
        const [savedInput, savedA, savedB, savedDown] = saved as tf.Tensor2D[];
        const dUp = tf.mul(dy, scaling) as tf.Tensor2D; // [tokens, out]
        const dDown = tf.matMul(dUp, savedB); // [tokens, r]
        const dB = free ? tf.matMul(dUp, savedDown, true, false) : tf.transpose(tf.matMul(tf.transpose(savedDown), dUp)); // [out, r]
        const dA = free ? tf.matMul(dDown, savedInput, true, false) : tf.matMul(tf.transpose(dDown), savedInput); // [r, in]
        const dInput = tf.matMul(dDown, savedA); // [tokens, in]
        return [dInput, dA, dB];
      },
    };
  });
  return product(x, loraA, loraB) as tf.Tensor2D;
}

/** `a[i] · b[i]` for `a [n, m, k]`, `b [n, k, p]`, as n plain products. */
function unstackedMatMul(a: tf.Tensor3D, b: tf.Tensor3D): tf.Tensor3D {
  const left = tf.unstack(a) as tf.Tensor2D[];
  const right = tf.unstack(b) as tf.Tensor2D[];
  return tf.stack(left.map((l, i) => tf.matMul(l, right[i]))) as tf.Tensor3D;
}

/**
 * Batched `a [n, m, k] · b [n, k, p] → [n, m, p]` with gradients for both. On the plain wasm
 * backend it runs as n products of batch size 1 so each one reaches XNNPACK.
 */
export function batchedMatMul(a: tf.Tensor, b: tf.Tensor): tf.Tensor3D {
  if (transposesAreFree()) return tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D);
  const product = customGrad(([left, right], save) => {
    save([left, right]);
    return {
      value: unstackedMatMul(left as tf.Tensor3D, right as tf.Tensor3D),
      gradFunc: (dy, saved) => {
        const [savedLeft, savedRight] = saved as tf.Tensor3D[];
        const dLeft = unstackedMatMul(dy as tf.Tensor3D, tf.transpose(savedRight, [0, 2, 1]));
        const dRight = unstackedMatMul(tf.transpose(savedLeft, [0, 2, 1]), dy as tf.Tensor3D);
        return [dLeft, dRight];
      },
    };
  });
  return product(a, b) as tf.Tensor3D;
}
