/**
 * Quantized base weights for linear layers (QLoRA).
 *
 * The weight is quantized in its `[out_features, in_features]` layout, flattened row by row, the
 * layout bitsandbytes' `Linear4bit` quantizes, so a block covers consecutive inputs of one output
 * unit. The float32 weight is rebuilt on the backend for each matmul, inside a custom gradient,
 * and freed right after it. The backward pass rebuilds it again for `dy · W`. The frozen base
 * weight gets no gradient: only the LoRA tensors train.
 */
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../../shared/errors';
import type { QuantSettings } from '../../shared/train-config';
import type { KernelSource, Linear } from '../models/linear';
import type { FrozenProduct } from '../models/fused-linear';
import { transposesAreFree } from '../models/matmul';
import { unaryCustomGrad } from '../models/ops';
import { nativeDequantize4bit, nativeKernelsActive } from '../backend/native-kernels';
import { dequantizeAbsmaxTensor, doubleQuantize, uploadDoubleQuantized, type DoubleQuantizedAbsmaxTensors } from './double-quant';
import { codebookFor, packNibblesInt32, quantizeBlockwise, unpackNibblesTensor, validateBlocksize, type QuantType } from './nf4';

export type { QuantSettings } from '../../shared/train-config';

/** Bytes per element of the int32 and float32 tensors that hold a quantized weight. */
const BYTES_PER_ELEMENT = 4;

/** A 4-bit base weight `[out, in]` held as packed codes and absmax constants on the backend. */
export class QuantizedWeight implements KernelSource {
  readonly quantType: QuantType;
  readonly blocksize: number;
  readonly doubleQuant: boolean;
  readonly outFeatures: number;
  readonly inFeatures: number;
  /** Number of 4-bit codes, whole blocks (the last block is zero-padded). */
  readonly codeCount: number;
  /** Bytes of every tensor this weight holds. */
  readonly bytes: number;
  /** Eight codes per int32 element. */
  private codes: tf.Tensor1D | null;
  /** One float32 absmax per block, when not double-quantized. */
  private absmax: tf.Tensor1D | null;
  /** The absmax as int8 codes, scales and mean, when double-quantized. */
  private absmaxQuantized: DoubleQuantizedAbsmaxTensors | null;

  /**
   * Quantizes `weight` (row-major `[outFeatures, inFeatures]`) on the host and uploads the packed
   * form. The host arrays are not kept.
   */
  constructor(weight: Float32Array, outFeatures: number, inFeatures: number, settings: QuantSettings) {
    validateQuantSettings(settings);
    if (weight.length !== outFeatures * inFeatures) {
      throw new StudioError('SHAPE_MISMATCH', `A quantized weight of shape [${outFeatures}, ${inFeatures}] needs ${outFeatures * inFeatures} values, got ${weight.length}.`);
    }
    this.quantType = settings.quantType;
    this.blocksize = settings.blocksize;
    this.doubleQuant = settings.doubleQuant;
    this.outFeatures = outFeatures;
    this.inFeatures = inFeatures;

    const quantized = quantizeBlockwise(weight, codebookFor(settings.quantType), settings.blocksize);
    this.codeCount = quantized.codes.length;
    this.codes = tf.tensor1d(packNibblesInt32(quantized.codes), 'int32');
    if (settings.doubleQuant) {
      this.absmax = null;
      this.absmaxQuantized = uploadDoubleQuantized(doubleQuantize(quantized.absmax));
    } else {
      this.absmax = tf.tensor1d(quantized.absmax, 'float32');
      this.absmaxQuantized = null;
    }
    this.bytes = this.storedTensors().reduce((sum, tensor) => sum + tensor.size * BYTES_PER_ELEMENT, 0);
  }

  /** Number of quantized parameters (`out · in`). */
  get parameterCount(): number {
    return this.outFeatures * this.inFeatures;
  }

  /** Returns the per-block absmax `[blocks]`, after double quantization if any. The caller disposes it. */
  blockAbsmax(): tf.Tensor1D {
    if (this.absmax) return this.absmax.clone();
    if (this.absmaxQuantized) return dequantizeAbsmaxTensor(this.absmaxQuantized);
    throw disposedError();
  }

  /** Rebuilds the float32 weight `[out, in]` on the backend. The caller disposes it. */
  dequantize(): tf.Tensor2D {
    if (!this.codes) throw disposedError();
    const codes = this.codes;
    return tf.tidy(() => {
      if (nativeKernelsActive()) {
        const codebook = tf.tensor1d(codebookFor(this.quantType));
        const weight = nativeDequantize4bit(codes, codebook, this.blockAbsmax(), this.blocksize, this.outFeatures * this.inFeatures);
        return tf.reshape(weight, [this.outFeatures, this.inFeatures]);
      }
      const blockCount = this.codeCount / this.blocksize;
      const indices = unpackNibblesTensor(codes, this.codeCount);
      const normalized = tf.gather(tf.tensor1d(codebookFor(this.quantType)), indices);
      const scaled = tf.mul(tf.reshape(normalized, [blockCount, this.blocksize]), tf.reshape(this.blockAbsmax(), [blockCount, 1]));
      const size = this.outFeatures * this.inFeatures;
      const flat = tf.reshape(scaled, [-1]);
      return tf.reshape(size === this.codeCount ? flat : tf.slice(flat, 0, size), [this.outFeatures, this.inFeatures]);
    });
  }

  /** Rebuilds the kernel `[in, out]` that `Linear` multiplies by. The caller disposes it. */
  materialize(): tf.Tensor2D {
    return tf.tidy(() => tf.transpose(this.dequantize()));
  }

  dispose(): void {
    tf.dispose(this.storedTensors());
    this.codes = null;
    this.absmax = null;
    this.absmaxQuantized = null;
  }

  private storedTensors(): tf.Tensor[] {
    const tensors: tf.Tensor[] = [];
    if (this.codes) tensors.push(this.codes);
    if (this.absmax) tensors.push(this.absmax);
    if (this.absmaxQuantized) tensors.push(this.absmaxQuantized.codes, this.absmaxQuantized.scales, this.absmaxQuantized.mean);
    return tensors;
  }
}

/**
 * The products of a quantized `W [out, in]` for a linear layer: `x · Wᵀ` and, for the backward
 * pass, `dy · W`. Each rebuilds the float32 weight and frees it after its one matmul.
 */
export function quantizedProduct(weight: QuantizedWeight): FrozenProduct {
  return {
    forward: (x) =>
      tf.tidy(() => {
        const w = weight.dequantize();
        return transposesAreFree() ? tf.matMul(x, w, false, true) : tf.matMul(x, tf.transpose(w));
      }),
    inputGradient: (dy) => tf.tidy(() => tf.matMul(dy, weight.dequantize())),
  };
}

/**
 * Creates `x [tokens, in] → x · Wᵀ [tokens, out]` for a quantized `W [out, in]`, differentiable
 * for `x` only (`dy · W`).
 */
export function createQuantizedMatMul(weight: QuantizedWeight): (x: tf.Tensor2D) => tf.Tensor2D {
  const product = quantizedProduct(weight);
  const matMul = unaryCustomGrad((x) => ({
    value: product.forward(x as tf.Tensor2D),
    gradFunc: (dy: tf.Tensor) => product.inputGradient(dy as tf.Tensor2D),
  }));
  return (x) => matMul(x) as tf.Tensor2D;
}

/**
 * Replaces `layer.kernel` with a 4-bit weight: the float32 kernel is disposed, and
 * `layer.quantized` / `layer.quantizedProduct` are set. Bias and LoRA weights stay float32.
 */
export function quantizeLinear(layer: Linear, settings: QuantSettings): QuantizedWeight {
  const kernel = layer.kernel;
  if (!kernel) {
    throw new StudioError('INVALID_ARGUMENT', `${layer.name} has no float32 kernel to quantize (it is already quantized).`, 'Quantize each model once, right after loading it.');
  }
  if (kernel instanceof tf.Variable) {
    throw new StudioError(
      'INVALID_ARGUMENT',
      `${layer.name} has a trainable base weight; a 4-bit weight cannot be trained.`,
      'Use QLoRA with frozen base weights (LoRA training), or full fine-tuning without quantization.',
    );
  }
  const transposed = tf.transpose(kernel); // [out, in]
  const values = transposed.dataSync() as Float32Array;
  transposed.dispose();

  const weight = new QuantizedWeight(values, layer.outFeatures, layer.inFeatures, settings);
  kernel.dispose();
  layer.kernel = null;
  layer.quantized = weight;
  layer.quantizedProduct = quantizedProduct(weight);
  return weight;
}

export function validateQuantSettings(settings: QuantSettings): void {
  codebookFor(settings.quantType);
  validateBlocksize(settings.blocksize);
  if (typeof settings.doubleQuant !== 'boolean') {
    throw new StudioError('INVALID_ARGUMENT', `doubleQuant must be true or false. Received: doubleQuant=${String(settings.doubleQuant)}.`, 'Use true (the QLoRA default).');
  }
}

function disposedError(): StudioError {
  return new StudioError('INTERNAL', 'A quantized weight was used after it was disposed.', 'Dispose the model only after the last forward pass.');
}
