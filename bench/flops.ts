/**
 * Analytic FLOP count of one LoRA training step (one micro-batch, no accumulation).
 *
 * A matmul `[m, k] × [k, n]` counts `2·m·k·n`. With T = batch·seq tokens, H heads, head size d,
 * and N_loss = batch·(seq − 1) positions that reach the LM head:
 *
 *   forward  = Σ_linear 2·T·in·out                         base projections and MLP
 *            + Σ_lora   2·T·r·(in + out)                    LoRA down and up projections
 *            + layers · 4·batch·H·seq²·d                    scores QKᵀ and probabilities·V
 *            + 2·N_loss·hidden·vocab                        LM head
 *   backward = Σ_linear 2·T·in·out                         input gradients only: base weights are frozen
 *            + Σ_lora   4·T·r·(in + out)                    gradients of lora_A, lora_B
 *            + Σ_lora   2·T·r·(in + out)                    input gradient through the adapter
 *            + layers · 8·batch·H·seq²·d                    dQ, dK from the scores; dP, dV
 *            + 2·N_loss·hidden·vocab                        input gradient of the LM head
 *
 * The attention term counts the full `seq × seq` score matrix, since the engine (and eager
 * PyTorch) compute it whole and mask afterwards. Elementwise work (norms, softmax, GELU/SiLU,
 * RoPE, AdamW) is left out, as in the usual MFU convention, so the ratio it feeds is a lower
 * bound on the hardware's utilization. The backward count assumes the gradient reaches the
 * first layer. In fact tfjs skips the input gradient of the first block's q/k/v (c_attn) product,
 * whose input depends on no trainable tensor, so the count is high by under 1/layers of the base term.
 */
import type { ModelShape } from './scenarios';

export interface StepFlops {
  forward: number;
  backward: number;
  total: number;
  /** The blocks' share of `forward`, which gradient checkpointing computes a second time. */
  blocksForward: number;
  /** `QKᵀ` again in the backward pass: training attention recomputes its scores instead of keeping them. */
  scoreRecompute: number;
}

interface LinearShape {
  inFeatures: number;
  outFeatures: number;
  lora: boolean;
}

/** Lists the linear layers of one block and marks the LoRA targets (the attention projections). */
export function blockLinears(shape: ModelShape): LinearShape[] {
  const h = shape.hidden;
  if (shape.family === 'gpt2') {
    return [
      { inFeatures: h, outFeatures: 3 * h, lora: true },
      { inFeatures: h, outFeatures: h, lora: true },
      { inFeatures: h, outFeatures: shape.intermediate, lora: false },
      { inFeatures: shape.intermediate, outFeatures: h, lora: false },
    ];
  }
  const headDim = h / shape.heads;
  return [
    { inFeatures: h, outFeatures: shape.heads * headDim, lora: true },
    { inFeatures: h, outFeatures: shape.kvHeads * headDim, lora: true },
    { inFeatures: h, outFeatures: shape.kvHeads * headDim, lora: true },
    { inFeatures: shape.heads * headDim, outFeatures: h, lora: true },
    { inFeatures: h, outFeatures: shape.intermediate, lora: false },
    { inFeatures: h, outFeatures: shape.intermediate, lora: false },
    { inFeatures: shape.intermediate, outFeatures: h, lora: false },
  ];
}

/** Counts the FLOPs of one LoRA step with the formula above. */
export function loraStepFlops(shape: ModelShape, batch: number, seq: number, rank: number): StepFlops {
  const tokens = batch * seq;
  const lossPositions = batch * (seq - 1);
  const headDim = shape.hidden / shape.heads;

  let baseLinear = 0;
  let loraLinear = 0;
  for (const layer of blockLinears(shape)) {
    baseLinear += 2 * tokens * layer.inFeatures * layer.outFeatures;
    if (layer.lora) loraLinear += 2 * tokens * rank * (layer.inFeatures + layer.outFeatures);
  }
  const attention = 4 * batch * shape.heads * seq * seq * headDim;
  const lmHead = 2 * lossPositions * shape.hidden * shape.vocab;

  const blocksForward = shape.layers * (baseLinear + loraLinear + attention);
  const forward = blocksForward + lmHead;
  const backward = shape.layers * (baseLinear + 3 * loraLinear + 2 * attention) + lmHead;
  return { forward, backward, total: forward + backward, blocksForward, scoreRecompute: shape.layers * (attention / 2) };
}

/** Base weights (float32) and LoRA parameters, for the report. */
export function parameterCounts(shape: ModelShape, rank: number): { base: number; lora: number } {
  let base = shape.vocab * shape.hidden + (shape.family === 'gpt2' ? shape.positions * shape.hidden : 0);
  let lora = 0;
  for (const layer of blockLinears(shape)) {
    base += shape.layers * (layer.inFeatures * layer.outFeatures + (shape.family === 'gpt2' ? layer.outFeatures : 0));
    if (layer.lora) lora += shape.layers * rank * (layer.inFeatures + layer.outFeatures);
  }
  const norms = shape.family === 'gpt2' ? (4 * shape.layers + 2) * shape.hidden : (2 * shape.layers + 1) * shape.hidden;
  return { base: base + norms, lora };
}
