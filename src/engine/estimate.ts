/**
 * Estimates of a run's trainable parameters, memory and time before it starts, from the model's
 * shapes and the settings. They are estimates: the benchmark compares them with measured peaks.
 */
import type { TrainConfig } from '../shared/train-config';
import type { ModelInfo } from './models/inspect';
import { matchesTarget } from './lora';

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

/** Sustained training throughput assumed per backend, in FLOP/s (measured on a 2-core x86 machine for wasm). */
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

  const weightsBytes = weightBytes(info, linearParameters, config);
  const loraBytes = trainableParameters * 4 * 2; // weights and gradients
  const optimizerBytes = trainableParameters * 4 * 2; // AdamW first and second moments

  const sequence = config.maxSeqLength;
  const tokens = config.batchSize * sequence;
  const h = info.hiddenSize;
  const perTokenPerLayer = 12 * h + 4 * info.intermediateSize; // inputs kept for backward: norms, q/k/v/o, MLP
  const attentionPerLayer = 2 * config.batchSize * info.numHeads * sequence * sequence; // scores and probabilities
  const layersKept = config.gradientCheckpointing ? 1 : info.numLayers;
  const checkpointed = config.gradientCheckpointing ? info.numLayers * tokens * h : 0;
  const logits = 3 * tokens * info.vocabSize; // logits, softmax and its gradient
  const activationsBytes = 4 * (layersKept * (tokens * perTokenPerLayer + attentionPerLayer) + checkpointed + logits);

  const attentionFlops = 4 * info.numLayers * config.batchSize * sequence * sequence * h;
  const forwardFlops = 2 * tokens * (linearParameters + h * info.vocabSize) + attentionFlops;
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

/** Base weights in memory: float32, or about 4.13 bits per quantized linear weight with NF4 + double quantization. */
function weightBytes(info: ModelInfo, linearParameters: number, config: TrainConfig): number {
  if (config.method !== 'qlora') return info.parameterCount * 4;
  const blocksize = config.quant?.blocksize ?? 64;
  const perParameter = 0.5 + (config.quant?.doubleQuant === false ? 4 / blocksize : 1 / blocksize + 4 / (blocksize * 256));
  return (info.parameterCount - linearParameters) * 4 + linearParameters * perParameter;
}
