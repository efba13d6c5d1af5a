/**
 * Causal language-modelling loss as transformers computes it: logits at position t predict the
 * label at t + 1, and the loss is the mean cross-entropy over the targets that are not -100.
 */
import * as tf from '@tensorflow/tfjs-core';

export const IGNORE_INDEX = -100;

/** Flat row indices and targets of the positions that count, after the shift. */
export interface ShiftedTargets {
  /** Index into the flattened `[batch·seq]` positions. */
  rows: number[];
  targets: number[];
}

export function shiftLabels(labels: number[][]): ShiftedTargets {
  const rows: number[] = [];
  const targets: number[] = [];
  labels.forEach((row, b) => {
    const seq = row.length;
    for (let t = 0; t < seq - 1; t++) {
      const target = row[t + 1];
      if (target === IGNORE_INDEX) continue;
      rows.push(b * seq + t);
      targets.push(target);
    }
  });
  return { rows, targets };
}

/** Per-target negative log-likelihood `[n]` (no reduction), for evaluation reports. */
export function tokenLosses(logits: tf.Tensor2D, targets: number[]): tf.Tensor1D {
  const [n, vocab] = logits.shape;
  const logProbabilities = tf.logSoftmax(logits);
  const flatIndex = tf.tensor1d(targets.map((t, i) => i * vocab + t), 'int32');
  return tf.neg(tf.gather(tf.reshape(logProbabilities, [n * vocab]), flatIndex)) as tf.Tensor1D;
}
