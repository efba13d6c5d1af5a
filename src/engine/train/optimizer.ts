/**
 * AdamW with PyTorch's update rule (torch.optim.AdamW, decoupled weight decay):
 *
 *     p ← p − lr · wd · p
 *     m ← β1 m + (1 − β1) g          v ← β2 v + (1 − β2) g²
 *     p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
 *
 * tfjs's own Adam places ε differently and has no weight decay, so the loss curve would drift
 * from PyTorch's; this one reproduces it. The moments are plain tensors so checkpoints can save
 * and restore them exactly.
 */
import * as tf from '@tensorflow/tfjs-core';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
}

export class AdamW {
  readonly options: AdamWOptions;
  /** Completed updates; bias correction uses step + 1 for the next one. */
  step = 0;
  private readonly firstMoments = new Map<string, tf.Tensor>();
  private readonly secondMoments = new Map<string, tf.Tensor>();

  constructor(options: AdamWOptions) {
    this.options = options;
  }

  /** Applies one update to every variable that has a gradient. */
  apply(variables: tf.Variable[], gradients: Map<string, tf.Tensor>, learningRate: number): void {
    const { beta1, beta2, epsilon, weightDecay } = this.options;
    const t = this.step + 1;
    const biasCorrection1 = 1 - beta1 ** t;
    const biasCorrection2Sqrt = Math.sqrt(1 - beta2 ** t);
    const stepSize = learningRate / biasCorrection1;

    for (const variable of variables) {
      const gradient = gradients.get(variable.name);
      if (!gradient) continue;
      const [m, v, updated] = tf.tidy(() => {
        const previousM = this.firstMoments.get(variable.name) ?? tf.zerosLike(variable);
        const previousV = this.secondMoments.get(variable.name) ?? tf.zerosLike(variable);
        const m = tf.add(tf.mul(previousM, beta1), tf.mul(gradient, 1 - beta1));
        const v = tf.add(tf.mul(previousV, beta2), tf.mul(tf.square(gradient), 1 - beta2));
        const decayed = weightDecay ? tf.mul(variable, 1 - learningRate * weightDecay) : variable;
        const denominator = tf.add(tf.div(tf.sqrt(v), biasCorrection2Sqrt), epsilon);
        const updated = tf.sub(decayed, tf.mul(tf.div(m, denominator), stepSize));
        return [m, v, updated];
      });
      this.firstMoments.get(variable.name)?.dispose();
      this.secondMoments.get(variable.name)?.dispose();
      this.firstMoments.set(variable.name, m);
      this.secondMoments.set(variable.name, v);
      variable.assign(updated);
      updated.dispose();
    }
    this.step = t;
  }

  /** Moments by variable name, for checkpoints. */
  state(): { step: number; firstMoments: Map<string, tf.Tensor>; secondMoments: Map<string, tf.Tensor> } {
    return { step: this.step, firstMoments: this.firstMoments, secondMoments: this.secondMoments };
  }

  /** Replaces the moments (copies are kept). */
  restore(step: number, firstMoments: Map<string, tf.Tensor>, secondMoments: Map<string, tf.Tensor>): void {
    this.dispose();
    this.step = step;
    for (const [name, tensor] of firstMoments) this.firstMoments.set(name, tensor.clone());
    for (const [name, tensor] of secondMoments) this.secondMoments.set(name, tensor.clone());
  }

  dispose(): void {
    for (const tensor of [...this.firstMoments.values(), ...this.secondMoments.values()]) tensor.dispose();
    this.firstMoments.clear();
    this.secondMoments.clear();
  }
}

/**
 * Scales gradients in place so their global L2 norm is at most `maxNorm`, like
 * torch.nn.utils.clip_grad_norm_ (coefficient `maxNorm / (norm + 1e-6)`, applied only below 1).
 * Returns the norm before clipping. `maxNorm` 0 only measures.
 */
export function clipGlobalNorm(gradients: Map<string, tf.Tensor>, maxNorm: number): number {
  const norm = tf.tidy(() => {
    const squares = [...gradients.values()].map((g) => tf.sum(tf.square(g)));
    return tf.sqrt(tf.addN(squares));
  });
  const value = norm.dataSync()[0];
  norm.dispose();
  if (maxNorm > 0) {
    const coefficient = maxNorm / (value + 1e-6);
    if (coefficient < 1) {
      for (const [name, gradient] of gradients) {
        gradients.set(name, tf.mul(gradient, coefficient));
        gradient.dispose();
      }
    }
  }
  return value;
}
