/**
 * Estimates of a run's trainable parameters, memory and time before it starts, from the model's
 * shapes and the settings. They are estimates: the benchmark compares them with measured peaks.
 */
import type { TrainConfig } from '../shared/train-config';
import type { ModelInfo } from './models/inspect';
import { matchesTarget } from './lora';
import { headChunkRows } from './models/head-loss';
import { LIVE_SCORE_BUFFERS, attentionChunkSize } from './models/attention';

export interface TrainingEstimate {
  trainableParameters: number;
  totalParameters: number;
  memory: {
    weightsBytes: number;
    loraBytes: number;
    optimizerBytes: number;
    activationsBytes: number;
    totalBytes: number;
  };
  /** Floating-point operations of one optimizer step. */
  stepFlops: number;
  tokensPerStep: number;
  totalSteps: number;
  /** At `assumedFlops` operations per second. */
  estimatedSeconds: number;
  assumedFlops: number;
}

/**
 * Training throughput assumed per backend, in FLOP/s. These are rough figures: the wasm one is
 * below what `npm run bench` measured on a 2-core x86 machine, with and without native BLAS.
 */
export const ASSUMED_FLOPS: Record<string, number> = { 'tensorflow-gpu': 2e12, tensorflow: 5e10, wasm: 1e10, cpu: 4e8 };

/** One linear layer's module path and shape, derived from the config. */
interface LinearShape {
  name: string;
  inFeatures: number;
  outFeatures: number;
}

export function linearShapes(info: ModelInfo): LinearShape[] {
  const shapes: LinearShape[] = [];
  const h = info.hiddenSize;
  const headDim = info.numHeads ? h / info.numHeads : 0;
  for (let layer = 0; layer < info.numLayers; layer++) {
    if (info.modelType === 'gpt2') {
      const p = `transformer.h.${layer}`;
      shapes.push({ name: `${p}.attn.c_attn`, inFeatures: h, outFeatures: 3 * h });
      shapes.push({ name: `${p}.attn.c_proj`, inFeatures: h, outFeatures: h });
      shapes.push({ name: `${p}.mlp.c_fc`, inFeatures: h, outFeatures: info.intermediateSize });
      shapes.push({ name: `${p}.mlp.c_proj`, inFeatures: info.intermediateSize, outFeatures: h });
    } else {
      const p = `model.layers.${layer}`;
      const kv = info.numKeyValueHeads * headDim;
      shapes.push({ name: `${p}.self_attn.q_proj`, inFeatures: h, outFeatures: h });
      shapes.push({ name: `${p}.self_attn.k_proj`, inFeatures: h, outFeatures: kv });
      shapes.push({ name: `${p}.self_attn.v_proj`, inFeatures: h, outFeatures: kv });
      shapes.push({ name: `${p}.self_attn.o_proj`, inFeatures: h, outFeatures: h });
      shapes.push({ name: `${p}.mlp.gate_proj`, inFeatures: h, outFeatures: info.intermediateSize });
      shapes.push({ name: `${p}.mlp.up_proj`, inFeatures: h, outFeatures: info.intermediateSize });
      shapes.push({ name: `${p}.mlp.down_proj`, inFeatures: info.intermediateSize, outFeatures: h });
    }
  }
  return shapes;
}

export function estimateTraining(info: ModelInfo, config: TrainConfig, backend = 'wasm', examplesPerEpoch = 1000): TrainingEstimate {
  const shapes = linearShapes(info);
  const targets = shapes.filter((s) => {
    if (!matchesTarget(s.name, config.lora.targetModules)) return false;
    const index = Number(/\.(?:layers|h)\.(\d+)\./.exec(s.name)?.[1]);
    return !config.lora.layersToTransform || config.lora.layersToTransform.includes(index);
  });
  const trainableParameters = targets.reduce((sum, s) => sum + config.lora.r * (s.inFeatures + s.outFeatures), 0);
  const linearParameters = shapes.reduce((sum, s) => sum + s.inFeatures * s.outFeatures, 0);

  const tokens = config.batchSize * config.maxSeqLength;
  // On the plain wasm backend (no native matmul) a tied LM head also keeps a transposed copy of the
  // embedding table, 4 · vocab · hidden bytes more, which this estimate leaves out.
  const weightsBytes = weightBytes(info, linearParameters, config);
  const loraBytes = trainableParameters * 4 * 2; // weights and gradients
  const optimizerBytes = trainableParameters * 4 * 2; // AdamW first and second moments
  const activationsBytes = 4 * activationValues(info, config, tokens, targets);
  const attentionFlops = 4 * info.numLayers * config.batchSize * config.maxSeqLength * config.maxSeqLength * info.hiddenSize;
  const forwardFlops = 2 * tokens * (linearParameters + info.hiddenSize * info.vocabSize) + attentionFlops;
  // Backward computes input gradients (≈ forward) and only the small LoRA weight gradients.
  const stepFlops = config.gradientAccumulationSteps * (forwardFlops * (config.gradientCheckpointing ? 3 : 2) + 6 * tokens * trainableParameters);
  const stepsPerEpoch = Math.ceil(examplesPerEpoch / (config.batchSize * config.gradientAccumulationSteps));
  const totalSteps = config.maxSteps > 0 ? config.maxSteps : Math.max(1, Math.round(config.epochs * stepsPerEpoch));
  const assumedFlops = ASSUMED_FLOPS[backend] ?? ASSUMED_FLOPS.wasm;

  return {
    trainableParameters,
    totalParameters: info.parameterCount + trainableParameters,
    memory: { weightsBytes, loraBytes, optimizerBytes, activationsBytes, totalBytes: weightsBytes + loraBytes + optimizerBytes + activationsBytes },
    stepFlops,
    tokensPerStep: tokens * config.gradientAccumulationSteps,
    totalSteps,
    estimatedSeconds: (stepFlops * totalSteps) / assumedFlops,
    assumedFlops,
  };
}

/**
 * Float32 values alive when the step's memory peaks: what each operation saves for its gradient
 * stays until the backward pass ends. The engine's fused operations (fused-linear.ts,
 * fused-ops.ts, attention.ts) save their inputs only. So a block keeps about 32 hidden-sized
 * values per token plus its MLP activations (GELU: two intermediate-sized, SwiGLU: three). A
 * LoRA layer with dropout also keeps its dropout mask, one byte per input value. The constants were
 * fitted to the buffers measured by `npm run bench:memory` (docs/BENCHMARKS.md), which they
 * match within about 6 %; they change whenever the forward pass keeps different intermediates.
 */
function activationValues(info: ModelInfo, config: TrainConfig, tokens: number, targets: LinearShape[]): number {
  const h = info.hiddenSize;
  const perLayer = 32 * h + (info.modelType === 'gpt2' ? 2 : 3) * info.intermediateSize;
  // A dropout mask is one byte per input value: a quarter of a float32 value.
  const adapters = targets.reduce((sum, s) => sum + (config.lora.loraDropout > 0 ? s.inFeatures / 4 : 0) + config.lora.r, 0);
  // The frozen LM head runs in chunks (models/head-loss.ts): one chunk's logits and their gradient
  // exist for a moment at the end of the forward pass.
  const headChunk = 2 * Math.min(tokens, headChunkRows(info.vocabSize)) * info.vocabSize;
  // The backward pass of one layer's attention allocates a few score-sized buffers per chunk.
  const chunk = config.maxAttentionBytes
    ? Math.min(config.maxSeqLength, attentionChunkSize({ maxAttentionBytes: config.maxAttentionBytes, batch: config.batchSize, heads: info.numHeads, keyLength: config.maxSeqLength }))
    : config.maxSeqLength;
  const attention = LIVE_SCORE_BUFFERS * config.batchSize * info.numHeads * chunk * config.maxSeqLength;
  // The head's chunk arrives after the last block; the measured peaks show about 60 % of it on
  // top of the kept activations.
  const withoutCheckpointing = tokens * (info.numLayers * perLayer + adapters) + Math.max(0.6 * headChunk, attention);
  if (!config.gradientCheckpointing) return withoutCheckpointing;
  // With checkpointing the peak is the head's chunk or one recomputed block, whose activations
  // and their gradients are alive together, beside each block's kept input. In a model of one
  // or two blocks that is as much as keeping everything, and checkpointing saves nothing.
  const block = tokens * (perLayer + adapters / info.numLayers) + attention;
  return Math.min(withoutCheckpointing, Math.max(headChunk, 2 * block) + info.numLayers * tokens * h);
}

/** Base weights in memory: float32, or about 4.13 bits per quantized linear weight with NF4 + double quantization. */
function weightBytes(info: ModelInfo, linearParameters: number, config: TrainConfig): number {
  if (config.method !== 'qlora') return info.parameterCount * 4;
  const blocksize = config.quant?.blocksize ?? 64;
  const perParameter = 0.5 + (config.quant?.doubleQuant === false ? 4 / blocksize : 1 / blocksize + 4 / (blocksize * 256));
  return (info.parameterCount - linearParameters) * 4 + linearParameters * perParameter;
}
