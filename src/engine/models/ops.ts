/**
 * Differentiable operations with hand-written gradients. The wasm backend has no
 * UnsortedSegmentSum kernel, which tfjs uses for the gradient of `gather`, so row selection and
 * the cross-entropy pick are written here with gradients built from kernels every backend has
 * (ScatterNd, OneHot, Softmax). The fused cross-entropy gradient, `softmax − one_hot`, is also
 * cheaper than differentiating through logSoftmax and gather.
 */
import * as tf from '@tensorflow/tfjs-core';

type UnaryGradFunction = (input: tf.Tensor, save: tf.GradSaveFunc) => {
  value: tf.Tensor;
  gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor;
};

/** `tf.customGrad` for a function of one tensor, with the argument types tfjs leaves loose. */
export function unaryCustomGrad(f: UnaryGradFunction): (input: tf.Tensor) => tf.Tensor {
  const wrapped = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => f(args[0] as tf.Tensor, args[1] as tf.GradSaveFunc));
  return (input) => wrapped(input);
}

/** `x[rows]` for `x [n, d]`; `rows` must not repeat (the gradient scatters without summing duplicates). */
export function gatherRows(x: tf.Tensor2D, rows: number[]): tf.Tensor2D {
  const [n, d] = x.shape;
  const select = unaryCustomGrad((input, save) => {
    const index = tf.tensor1d(rows, 'int32');
    save([index]);
    return {
      value: tf.gather(input, index),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.scatterND(tf.reshape(saved[0], [rows.length, 1]), dy, [n, d]),
    };
  });
  return select(x) as tf.Tensor2D;
}

/**
 * Mean cross-entropy of `logits [n, vocab]` against integer `targets`, as a scalar; gradient
 * `(softmax(logits) − one_hot(targets)) / n`.
 */
export function softmaxCrossEntropy(logits: tf.Tensor2D, targets: number[]): tf.Scalar {
  const [n, vocab] = logits.shape;
  const loss = unaryCustomGrad((input, save) => {
    const targetTensor = tf.tensor1d(targets, 'int32');
    save([input, targetTensor]);
    const logProbabilities = tf.logSoftmax(input as tf.Tensor2D);
    const positions = tf.tensor2d(targets.flatMap((t, i) => [i, t]), [n, 2], 'int32');
    const picked = tf.gatherND(logProbabilities, positions);
    return {
      value: tf.neg(tf.mean(picked)),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [savedLogits, savedTargets] = saved;
        const oneHot = tf.oneHot(savedTargets as tf.Tensor1D, vocab);
        return tf.mul(tf.sub(tf.softmax(savedLogits), oneHot), tf.div(dy, n));
      },
    };
  });
  return loss(logits) as tf.Scalar;
}
