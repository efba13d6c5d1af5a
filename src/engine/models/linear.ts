/**
 * A linear layer of a loaded model, with an optional LoRA adapter and an optional quantized
 * weight. The weight is kept as a kernel `[in_features, out_features]` so the forward pass is one
 * plain matMul: Hugging Face `nn.Linear` weights (`[out, in]`) are transposed once at load, and
 * GPT-2's `Conv1D` weights are already `[in, out]`.
 */
import * as tf from '@tensorflow/tfjs-core';
import { loraDelta, type LoraWeights } from '../lora/layer';
import { fusedLinear, type FrozenProduct } from './fused-linear';
import { transposesAreFree } from './matmul';

/** A base weight whose float32 kernel is rebuilt for each use (a quantized weight). */
export interface KernelSource {
  /** Returns the kernel `[in, out]`; the caller disposes it. */
  materialize(): tf.Tensor2D;
  /** Bytes the stored form occupies. */
  readonly bytes: number;
  dispose(): void;
}

export interface ForwardContext {
  training: boolean;
  /** Incremented per dropout call so masks differ between layers and steps. */
  nextSeed: () => number;
}

export const INFERENCE: ForwardContext = { training: false, nextSeed: () => 0 };

export class Linear {
  /** Module path as in the HF checkpoint, e.g. `model.layers.0.self_attn.q_proj`. */
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** True for GPT-2's Conv1D, whose checkpoint weight is `[in, out]` (PEFT's fan_in_fan_out). */
  readonly fanInFanOut: boolean;
  kernel: tf.Tensor2D | null;
  bias: tf.Tensor1D | null;
  lora: LoraWeights | null = null;
  /** Set when the base weight is quantized; `kernel` is then null. */
  quantized: KernelSource | null = null;
  /**
   * The products of the quantized weight, set by the quantization module so the float32 kernel is
   * rebuilt inside each product and freed after it. `apply()` adds bias and LoRA.
   */
  quantizedProduct: FrozenProduct | null = null;

  /** `kernel` is the float32 `[in, out]` weight, or only its shape for a quantized layer (`Linear.quantized`). */
  constructor(name: string, kernel: tf.Tensor2D | { inFeatures: number; outFeatures: number }, bias: tf.Tensor1D | null, fanInFanOut: boolean) {
    this.name = name;
    this.bias = bias;
    this.fanInFanOut = fanInFanOut;
    if (kernel instanceof tf.Tensor) {
      this.kernel = kernel;
      [this.inFeatures, this.outFeatures] = kernel.shape;
    } else {
      this.kernel = null;
      ({ inFeatures: this.inFeatures, outFeatures: this.outFeatures } = kernel);
    }
  }

  /**
   * A layer whose base weight was quantized on the host while loading, so its float32 kernel never
   * occupies backend memory. `product` computes its matmuls (quant/qlinear.ts).
   */
  static quantized(name: string, weight: KernelSource & { inFeatures: number; outFeatures: number }, product: FrozenProduct, bias: tf.Tensor1D | null, fanInFanOut: boolean): Linear {
    const layer = new Linear(name, weight, bias, fanInFanOut);
    layer.quantized = weight;
    layer.quantizedProduct = product;
    return layer;
  }

  /**
   * `x [tokens, in] → [tokens, out]`. `inputGradient: false` means that nothing upstream of `x`
   * trains, so the backward pass returns zeros for `x` and skips `dy · Wᵀ`.
   */
  apply(x: tf.Tensor2D, context: ForwardContext, options: { inputGradient?: boolean } = {}): tf.Tensor2D {
    const dropoutSeed = context.training && this.lora ? context.nextSeed() : undefined;
    if (this.kernel && isTrainable(this.kernel)) {
      // A trainable kernel (full fine-tuning) needs tfjs's own gradient, which covers the kernel too.
      let y: tf.Tensor2D = tf.matMul(x, this.kernel);
      if (this.bias) y = tf.add(y, this.bias) as tf.Tensor2D;
      if (this.lora) y = tf.add(y, loraDelta(x, this.lora, context.training, dropoutSeed));
      return y;
    }
    return fusedLinear(x, { base: this.frozenProduct(), bias: this.bias, lora: this.lora, dropoutSeed, inputGradient: options.inputGradient ?? true });
  }

  private frozenProduct(): FrozenProduct {
    if (this.quantizedProduct) return this.quantizedProduct;
    const kernel = this.kernel;
    if (!kernel) throw new Error(`Linear ${this.name} has neither a kernel nor a quantized weight.`);
    return {
      forward: (x) => tf.matMul(x, kernel),
      inputGradient: (dy) => (transposesAreFree() ? tf.matMul(dy, kernel, false, true) : tf.matMul(dy, tf.transpose(kernel))),
    };
  }

  /** The weight in the checkpoint's layout: `[out, in]`, or `[in, out]` for Conv1D. */
  checkpointWeight(): tf.Tensor2D {
    return tf.tidy(() => {
      const kernel = this.kernel ? this.kernel : this.quantized!.materialize();
      return this.fanInFanOut ? kernel.clone() : tf.transpose(kernel);
    });
  }

  /** Number of parameters of the base weight and bias. */
  get baseParameterCount(): number {
    return this.inFeatures * this.outFeatures + (this.bias ? this.outFeatures : 0);
  }

  dispose(): void {
    this.kernel?.dispose();
    this.bias?.dispose();
    this.quantized?.dispose();
    this.lora?.loraA.dispose();
    this.lora?.loraB.dispose();
    this.kernel = null;
    this.bias = null;
    this.lora = null;
  }
}

function isTrainable(tensor: tf.Tensor): boolean {
  return (tensor as Partial<tf.Variable>).trainable === true;
}
