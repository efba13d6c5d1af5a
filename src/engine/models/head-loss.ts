/**
 * The LM head and the cross-entropy in one pass over chunks of rows, for a head that does not
 * train (LoRA and QLoRA leave it frozen).
 *
 * Computed the plain way, the loss keeps the logits `[tokens, vocab]` and their gradient alive
 * until the backward pass. At 1 024 tokens and GPT-2's 50 257 words, five such tables take 1 GiB,
 * more than the rest of a LoRA step. Here each chunk of rows gets its logits, its loss and the
 * gradient of the loss with respect to them, `(softmax − one_hot) / n`, in the forward pass, and
 * the gradient is at once carried through the head to the hidden states, `dlogits · W`. Only that
 * `[tokens, hidden]` result is kept for the backward pass, which scales it by the incoming
 * gradient. The products are the same as the plain way's, so the step costs no extra work.
 *
 * When the tape is off (evaluation), the hidden-state gradient is not computed.
 */
import * as tf from '@tensorflow/tfjs-core';
import { nativeCrossEntropy, nativeKernelsActive } from '../backend/native-kernels';
import { unaryCustomGrad } from './ops';

/** A frozen LM head as two products. */
export interface FrozenHead {
  /** `x [rows, hidden] → logits [rows, vocab]`. */
  logits(x: tf.Tensor2D): tf.Tensor2D;
  /** `dlogits [rows, vocab] → [rows, hidden]`, the gradient of the logits carried to the input. */
  inputGradient(dLogits: tf.Tensor2D): tf.Tensor2D;
  vocabSize: number;
  /** Called once after the last chunk, to free what `logits` or `inputGradient` built for reuse. */
  release?(): void;
}

/**
 * Bytes of one chunk's logits table; the gradient table beside it has the same size. 32 MiB is
 * about 160 rows of a 50 000-word vocabulary, enough rows for sgemm to run at full speed.
 */
export const HEAD_CHUNK_BYTES = 32 * 1024 * 1024;

/** Rows per chunk for a vocabulary: the logits of one chunk fit `HEAD_CHUNK_BYTES`. */
export function headChunkRows(vocabSize: number): number {
  return Math.max(1, Math.floor(HEAD_CHUNK_BYTES / (4 * vocabSize)));
}

/**
 * Mean cross-entropy of `head(hidden) [n, vocab]` against `targets [n]`, computed chunk by chunk,
 * with the gradient for `hidden`.
 */
export function chunkedHeadLoss(hidden: tf.Tensor2D, targets: number[], head: FrozenHead, chunkRows = headChunkRows(head.vocabSize)): tf.Scalar {
  const [n, width] = hidden.shape;
  const withGradient = tf.engine().isTapeOn();
  const loss = unaryCustomGrad((input, save) => {
    const lossSums: tf.Scalar[] = [];
    const gradients: tf.Tensor2D[] = [];
    // Chunks of equal size (at most chunkRows), so no chunk is a thin remainder.
    const rowsPerChunk = Math.ceil(n / Math.ceil(n / chunkRows));
    for (let start = 0; start < n; start += rowsPerChunk) {
      const size = Math.min(rowsPerChunk, n - start);
      const [lossSum, gradient] = tf.tidy(() => {
        const rows = tf.slice(input as tf.Tensor2D, [start, 0], [size, width]);
        const { losses, grad } = rowCrossEntropy(head.logits(rows), targets.slice(start, start + size), 1 / n);
        return [tf.sum(losses) as tf.Scalar, withGradient ? head.inputGradient(grad) : tf.zeros([0, width])] as const;
      });
      lossSums.push(lossSum);
      if (withGradient) gradients.push(gradient as tf.Tensor2D);
      else gradient.dispose();
    }
    head.release?.();
    const value = tf.div(lossSums.length === 1 ? lossSums[0] : tf.addN(lossSums), n);
    if (withGradient) save([gradients.length === 1 ? gradients[0] : tf.concat(gradients, 0)]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(saved[0], dy),
    };
  });
  return loss(hidden) as tf.Scalar;
}

/** Per-row losses `[rows]` and `(softmax − one_hot) · scale`, natively when the kernels are in use. */
function rowCrossEntropy(logits: tf.Tensor2D, targets: number[], scale: number): { losses: tf.Tensor1D; grad: tf.Tensor2D } {
  const targetTensor = tf.tensor1d(targets, 'int32');
  if (nativeKernelsActive()) return nativeCrossEntropy(logits, targetTensor, scale);
  const [rows, vocab] = logits.shape;
  const logProbabilities = tf.logSoftmax(logits);
  const positions = tf.tensor2d(targets.flatMap((t, i) => [i, t]), [rows, 2], 'int32');
  const losses = tf.neg(tf.gatherND(logProbabilities, positions)) as tf.Tensor1D;
  const grad = tf.mul(tf.sub(tf.exp(logProbabilities), tf.oneHot(targetTensor, vocab)), scale) as tf.Tensor2D;
  return { losses, grad };
}
